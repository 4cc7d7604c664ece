//! `kv plot`: the tournament's JSON lines (`examples/kv/tournament.sh`) as a chart and a table.
//!
//! One panel per setting (in memory, out of memory), one group of bars per workload, one bar
//! per engine (or engine variant, the line's `label`), ops/s on a log scale (a YCSB-E scan and a
//! YCSB-C read differ by two orders of magnitude). The text table has the same numbers, plus
//! fio's QD32 random-read IOPS on the same file where the run measured it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plotters::prelude::*;
use serde_json::Value;

use crate::error::KvError;
use crate::report::group_digits;

/// `kv plot` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// JSON lines written by tournament.sh (or `kv bench --json`, one run per line).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The SVG chart to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "kv bench: YCSB ops/s")]
    pub title: String,
}

/// One measured bar.
#[derive(Debug, Clone)]
struct Bar {
    setting: String,
    workload: String,
    series: String,
    ops_per_s: f64,
    /// Process CPU per operation (per lookup when batched): steadier than ops/s on a
    /// shared machine.
    cpu_us: Option<f64>,
}

/// Everything read from the JSON lines, in order of first appearance.
#[derive(Debug, Default)]
struct Results {
    bars: Vec<Bar>,
    settings: Vec<String>,
    workloads: Vec<String>,
    series: Vec<String>,
    /// fio's IOPS per setting.
    fio: BTreeMap<String, f64>,
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|known| known == item) {
        list.push(item.to_string());
    }
}

/// The setting a line belongs to: its `setting`, else whether a memory cap was on.
fn setting_of(line: &Value) -> String {
    if let Some(setting) = line["setting"].as_str() {
        return setting.to_string();
    }
    match line["memory_cap"].as_str() {
        Some(cap) if cap != "none" => "out of memory".into(),
        _ => "in memory".into(),
    }
}

fn parse(text: &str) -> Result<Results, KvError> {
    let mut results = Results::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let json: Value = serde_json::from_str(line).map_err(|error| {
            KvError::InvalidArgument(format!("line {}: not JSON: {error}", number + 1))
        })?;
        let setting = setting_of(&json);
        if let Some(iops) = json["iops"].as_f64() {
            results.fio.insert(setting, iops);
            continue;
        }
        // A batched run's operations are batches: count its lookups (YCSB reads) instead.
        let (rate, cpu) = if json["batch"].as_u64().unwrap_or(1) > 1 {
            ("lookups_per_s", "cpu_us_per_lookup")
        } else {
            ("ops_per_s", "cpu_us_per_op")
        };
        let (Some(workload), Some(engine), Some(ops_per_s)) = (
            json["workload"].as_str(),
            json["engine"].as_str(),
            json[rate].as_f64(),
        ) else {
            return Err(KvError::InvalidArgument(format!(
                "line {}: neither a kv bench result nor a fio line",
                number + 1
            )));
        };
        let series = json["label"].as_str().unwrap_or(engine).to_string();
        push_unique(&mut results.settings, &setting);
        push_unique(&mut results.workloads, workload);
        push_unique(&mut results.series, &series);
        results.bars.push(Bar {
            setting,
            workload: workload.to_string(),
            series,
            ops_per_s,
            cpu_us: json[cpu].as_f64(),
        });
    }
    if results.bars.is_empty() {
        return Err(KvError::InvalidArgument(
            "no kv bench results to plot".into(),
        ));
    }
    Ok(results)
}

impl Results {
    /// The latest bar for this cell (a rerun replaces an earlier line).
    fn bar(&self, setting: &str, workload: &str, series: &str) -> Option<&Bar> {
        self.bars
            .iter()
            .rev()
            .find(|bar| bar.setting == setting && bar.workload == workload && bar.series == series)
    }

    fn value(&self, setting: &str, workload: &str, series: &str) -> Option<f64> {
        self.bar(setting, workload, series).map(|bar| bar.ops_per_s)
    }

    fn series_in(&self, setting: &str) -> Vec<&String> {
        self.series
            .iter()
            .filter(|series| {
                self.bars
                    .iter()
                    .any(|bar| bar.setting == setting && &&bar.series == series)
            })
            .collect()
    }

    /// The readable table: ops/s, then CPU µs per operation, per workload (rows) and engine
    /// (columns), per setting.
    fn table(&self) -> String {
        let mut text = String::new();
        for setting in &self.settings {
            text.push_str(&self.setting_table(setting, "ops/s", &|bar| {
                group_digits(bar.ops_per_s.round() as u64)
            }));
            text.push_str(
                &self.setting_table(setting, "CPU µs per operation", &|bar| {
                    bar.cpu_us.map_or("-".into(), |cpu| format!("{cpu:.2}"))
                }),
            );
            if let Some(iops) = self.fio.get(setting) {
                text.push_str(&format!(
                    "fio 4 KiB random reads, QD32, same file: {} IOPS\n",
                    group_digits(iops.round() as u64)
                ));
            }
            text.push('\n');
        }
        text
    }

    fn setting_table(&self, setting: &str, what: &str, cell: &dyn Fn(&Bar) -> String) -> String {
        let series = self.series_in(setting);
        let width = series
            .iter()
            .map(|name| name.len())
            .max()
            .unwrap_or(0)
            .max(11);
        let mut text = format!("{setting} ({what})\n{:<10}", "workload");
        for name in &series {
            text.push_str(&format!(" {name:>width$}"));
        }
        text.push('\n');
        for workload in &self.workloads {
            let present = self
                .bars
                .iter()
                .any(|bar| bar.setting == setting && &bar.workload == workload);
            if !present {
                continue;
            }
            text.push_str(&format!("{workload:<10}"));
            for name in &series {
                let text_cell = self.bar(setting, workload, name).map_or("-".into(), cell);
                text.push_str(&format!(" {text_cell:>width$}"));
            }
            text.push('\n');
        }
        text
    }
}

/// A colour per series, stable across panels (bufpool's variants in blues).
fn colour(series: &str, index: usize) -> RGBColor {
    match series {
        "bufpool" => RGBColor(31, 119, 180),
        "lmdb" => RGBColor(44, 160, 44),
        "redb" => RGBColor(214, 39, 40),
        "rocksdb" => RGBColor(255, 127, 14),
        "btreemap" => RGBColor(127, 127, 127),
        name if name.starts_with("bufpool") => RGBColor(120, 180, 230),
        _ => {
            let (red, green, blue) = Palette99::COLORS[index % Palette99::COLORS.len()];
            RGBColor(red, green, blue)
        }
    }
}

fn draw(results: &Results, args: &PlotArgs) -> Result<(), Box<dyn std::error::Error>> {
    const PANEL_HEIGHT: u32 = 420;
    let panels = results.settings.len() as u32;
    let root = SVGBackend::new(&args.out, (1100, PANEL_HEIGHT * panels + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&args.title, ("sans-serif", 22))?;
    let areas = root.split_evenly((results.settings.len(), 1));
    for (setting, area) in results.settings.iter().zip(areas) {
        let series = results.series_in(setting);
        let values: Vec<f64> = results
            .bars
            .iter()
            .filter(|bar| &bar.setting == setting)
            .map(|bar| bar.ops_per_s.max(1.0))
            .collect();
        let low = values.iter().cloned().fold(f64::INFINITY, f64::min) / 2.0;
        let high = values.iter().cloned().fold(1.0, f64::max) * 2.0;
        let workloads: Vec<&String> = results
            .workloads
            .iter()
            .filter(|workload| {
                results
                    .bars
                    .iter()
                    .any(|bar| &bar.setting == setting && &&bar.workload == workload)
            })
            .collect();
        let groups = workloads.len();
        let caption = match results.fio.get(setting) {
            Some(iops) => format!(
                "{setting} (fio QD32 random reads: {} IOPS)",
                group_digits(iops.round() as u64)
            ),
            None => setting.clone(),
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..groups as f64, (low..high).log_scale())?;
        let names: Vec<String> = workloads.iter().map(|name| name.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups * 2 + 1)
            .x_label_formatter(&|x| {
                let group = x.floor();
                if (x - group - 0.5).abs() < 1e-6 {
                    names.get(group as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("ops/s (log scale)")
            .y_label_formatter(&|y| group_digits(y.round() as u64))
            .draw()?;
        let width = 0.8 / series.len().max(1) as f64;
        for (slot, name) in series.iter().enumerate() {
            let color = colour(name, slot);
            let bars: Vec<Rectangle<(f64, f64)>> = workloads
                .iter()
                .enumerate()
                .filter_map(|(group, workload)| {
                    let value = results.value(setting, workload, name)?;
                    let left = group as f64 + 0.1 + width * slot as f64;
                    Some(Rectangle::new(
                        [(left, low), (left + width * 0.9, value.max(low))],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

pub fn run(args: &PlotArgs) -> Result<(), KvError> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|error| KvError::io(format!("read {}", args.input.display()), error))?;
    let results = parse(&text)?;
    draw(&results, args).map_err(|error| {
        KvError::InvalidArgument(format!("drawing {}: {error}", args.out.display()))
    })?;
    print!("{}", results.table());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"engine":"bufpool","workload":"ycsb-a","ops_per_s":1000.0,"memory_cap":"none"}
{"engine":"lmdb","workload":"ycsb-a","ops_per_s":500.0,"memory_cap":"none"}
{"engine":"bufpool","label":"bufpool batch 32","workload":"ycsb-c","ops_per_s":3000.0,"lookups_per_s":96000.0,"batch":32,"setting":"out of memory"}
{"engine":"fio-randread-qd32","iops":120000,"setting":"out of memory"}
"#;

    #[test]
    fn table_groups_by_setting_workload_and_series() {
        let results = parse(LINES).unwrap();
        assert_eq!(results.settings, ["in memory", "out of memory"]);
        assert_eq!(results.series, ["bufpool", "lmdb", "bufpool batch 32"]);
        let table = results.table();
        assert!(table.contains("in memory (ops/s)"), "{table}");
        let row = table
            .lines()
            .find(|line| line.starts_with("ycsb-a"))
            .unwrap();
        assert!(row.contains("1,000") && row.contains("500"), "{row}");
        assert!(
            table.contains("in memory (CPU µs per operation)"),
            "{table}"
        );
        assert!(table.contains("120,000 IOPS"), "{table}");
        assert!(
            table.contains("96,000"),
            "a batch counts its lookups: {table}"
        );
        assert!(!table.contains("lmdb") || table.find("lmdb") < table.find("out of memory"));
    }

    #[test]
    fn writes_an_svg_with_every_series() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kv-plot-test");
        std::fs::create_dir_all(&dir).unwrap();
        let args = PlotArgs {
            input: dir.join("in.jsonl"),
            out: dir.join("out.svg"),
            title: "test".into(),
        };
        std::fs::write(&args.input, LINES).unwrap();
        run(&args).unwrap();
        let svg = std::fs::read_to_string(&args.out).unwrap();
        for text in [
            "bufpool batch 32",
            "lmdb",
            "ycsb-a",
            "ycsb-c",
            "out of memory",
        ] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
    }

    #[test]
    fn rejects_lines_that_are_not_results() {
        assert!(parse("{\"engine\":\"x\"}\n").is_err());
        assert!(parse("not json\n").is_err());
        assert!(parse("\n").is_err());
    }
}
