//! bufpool-io: O_DIRECT files, io_uring rings, a pread/pwrite fallback, fault injection.
