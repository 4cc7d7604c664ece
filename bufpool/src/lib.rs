//! bufpool: the buffer pool.
