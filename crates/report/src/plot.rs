//! The figures, drawn with plotters as SVG and PNG: verified pass@k against k per bucket (the paper's left
//! panel) and verified pass@k against op at k = 1 and at the largest k (its middle and right panels), one
//! line per model, error bars over runs, difficulty buckets marked on the op axis.
//!
//! Text is drawn with DejaVu Sans, embedded in the crate (ab_glyph, no system fonts or fontconfig), so a
//! PNG renders the same on any machine.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::summary::{StageSummary, Stat};

/// DejaVu Sans 2.37 (license in `fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const LEGEND: u32 = 230;
/// The top of the y axis: room above 1.0 for the bucket names.
const Y_TOP: f64 = 1.09;

/// Model colours, in model order (colour-blind-safe Okabe–Ito, then greys).
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];
const BANDS: [RGBColor; 2] = [RGBColor(235, 240, 250), RGBColor(250, 242, 230)];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Every family name plotters may ask for maps to the one embedded face.
        for name in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                if register_font(name, style, FONT).is_err() {
                    panic!("the embedded DejaVu Sans font does not parse");
                }
            }
        }
    });
}

/// A figure written to disk.
#[derive(Clone, Debug)]
pub struct Plot {
    /// The stage it shows.
    pub stage: String,
    /// Its title.
    pub title: String,
    /// The SVG, relative to the report directory.
    pub svg: String,
    /// The PNG, relative to the report directory.
    pub png: String,
}

/// The x axis.
enum XAxis {
    /// Samples k, drawn on a log2 scale.
    Ks(Vec<usize>),
    /// Ops, with the difficulty buckets as shaded bands.
    Ops(Vec<u32>, Vec<(u32, u32, String)>),
}

/// A figure, independent of the backend.
struct Figure {
    title: String,
    x_desc: String,
    y_desc: String,
    x: XAxis,
    /// Model name and its points (x value as on the axis: k or op; the statistic).
    series: Vec<(String, Vec<(f64, Stat)>)>,
    /// Under the legend.
    note: String,
}

impl Figure {
    fn x_of(&self, v: f64) -> f64 {
        match self.x {
            XAxis::Ks(_) => v.log2(),
            XAxis::Ops(..) => v,
        }
    }
}

/// Writes every figure of `st` as `plots/<stage>/<name>.svg` and `.png` under `out`.
pub fn write_stage(out: &Path, st: &StageSummary) -> anyhow::Result<Vec<Plot>> {
    fonts();
    let dir_rel = format!("plots/{}", slug(&st.stage));
    let dir = out.join(&dir_rel);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plots = Vec::new();
    let mut used = Vec::new();
    for (name, fig) in figures(st) {
        let mut file = slug(&name);
        while used.contains(&file) {
            file.push('_');
        }
        used.push(file.clone());
        let svg_rel = format!("{dir_rel}/{file}.svg");
        let png_rel = format!("{dir_rel}/{file}.png");
        let svg = render_svg(&fig)?;
        std::fs::write(out.join(&svg_rel), svg)
            .with_context(|| format!("writing {}", out.join(&svg_rel).display()))?;
        let png = render_png(&fig)?;
        std::fs::write(out.join(&png_rel), png)
            .with_context(|| format!("writing {}", out.join(&png_rel).display()))?;
        plots.push(Plot {
            stage: st.stage.clone(),
            title: fig.title.clone(),
            svg: svg_rel,
            png: png_rel,
        });
    }
    Ok(plots)
}

/// The figures of one stage, each with a file name.
fn figures(st: &StageSummary) -> Vec<(String, Figure)> {
    let note = if st.runs > 1 {
        format!(
            "mean over n = {} runs;\nerror bars: ± 1 sample std",
            st.runs
        )
    } else {
        "one run".into()
    };
    let cfg = &st.settings;
    let decoding = if cfg.temperature == 0.0 {
        "greedy".to_string()
    } else {
        format!("T = {}, n = {}", cfg.temperature, cfg.samples)
    };
    let mut figs = Vec::new();
    let jmax = st.ks.len() - 1;
    let kmax = st.max_k();

    // pass@k against k, per bucket.
    if st.ks.len() > 1 {
        for b in &st.buckets {
            if !st.models.iter().any(|m| m.per_bucket.contains_key(&b.name)) {
                continue;
            }
            let series = st
                .models
                .iter()
                .filter_map(|m| {
                    let c = m.per_bucket.get(&b.name)?;
                    Some((
                        m.model.clone(),
                        st.ks
                            .iter()
                            .zip(&c.verified_pass)
                            .map(|(&k, s)| (k as f64, s.clone()))
                            .collect(),
                    ))
                })
                .collect();
            figs.push((
                format!("pass-at-k-{}", b.name),
                Figure {
                    title: format!(
                        "{}: verified pass@k, {} (op {}-{})",
                        st.stage, b.name, b.ops[0], b.ops[1]
                    ),
                    x_desc: format!(
                        "k (samples; {decoding}, {} estimator)",
                        cfg.estimator.name()
                    ),
                    y_desc: "verified pass@k".into(),
                    x: XAxis::Ks(st.ks.clone()),
                    series,
                    note: note.clone(),
                },
            ));
        }
    }

    // pass@k against op.
    let ops: Vec<u32> = st
        .models
        .first()
        .map(|m| m.per_op.keys().copied().collect())
        .unwrap_or_default();
    if ops.is_empty() {
        return figs;
    }
    let (lo, hi) = (ops[0], *ops.last().expect("not empty"));
    let bands: Vec<(u32, u32, String)> = st
        .buckets
        .iter()
        .filter(|b| b.ops[1] >= lo && b.ops[0] <= hi)
        .map(|b| (b.ops[0].max(lo), b.ops[1].min(hi), b.name.clone()))
        .collect();
    let by_op = |get: &dyn Fn(&crate::summary::StatCell) -> Option<Stat>| {
        st.models
            .iter()
            .map(|m| {
                (
                    m.model.clone(),
                    m.per_op
                        .iter()
                        .filter_map(|(&op, c)| Some((f64::from(op), get(c)?)))
                        .collect(),
                )
            })
            .collect::<Vec<_>>()
    };
    let op_fig = |title: String, y_desc: String, series| Figure {
        title,
        x_desc: "op (operations per problem)".into(),
        y_desc,
        x: XAxis::Ops(ops.clone(), bands.clone()),
        series,
        note: note.clone(),
    };
    if cfg.greedy && cfg.temperature > 0.0 {
        figs.push((
            "op-greedy-pass1".into(),
            op_fig(
                format!("{}: verified pass@1 by op, greedy", st.stage),
                "verified pass@1 (greedy)".into(),
                by_op(&|c| c.greedy.as_ref().map(|g| g.verified_pass1.clone())),
            ),
        ));
    }
    figs.push((
        "op-pass1".into(),
        op_fig(
            format!("{}: verified pass@1 by op ({decoding})", st.stage),
            "verified pass@1".into(),
            by_op(&|c| c.verified_pass.first().cloned()),
        ),
    ));
    if kmax > 1 {
        figs.push((
            format!("op-pass{kmax}"),
            op_fig(
                format!("{}: verified pass@{kmax} by op ({decoding})", st.stage),
                format!("verified pass@{kmax}"),
                by_op(&|c| c.verified_pass.get(jmax).cloned()),
            ),
        ));
    }
    figs
}

/// A file name: lowercase letters, digits and `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "x".into() } else { out }
}

fn render_svg(fig: &Figure) -> anyhow::Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, fig)?;
        root.present()
            .map_err(|e| anyhow!("drawing the SVG: {e:?}"))?;
    }
    Ok(s)
}

fn render_png(fig: &Figure) -> anyhow::Result<Vec<u8>> {
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, fig)?;
        root.present()
            .map_err(|e| anyhow!("drawing the PNG: {e:?}"))?;
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("encoding the PNG")?;
        w.write_image_data(&rgb).context("encoding the PNG")?;
        w.finish().context("encoding the PNG")?;
    }
    Ok(png)
}

/// An f64 axis whose ticks are exactly `keys` (every k, every op), whatever their number.
struct Keyed {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl Ranged for Keyed {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let r = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (r * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.keys.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> anyhow::Result<()> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing `{}`: {e:?}", fig.title);
    root.fill(&WHITE).map_err(e)?;
    let (chart_area, legend) = root.split_horizontally(WIDTH - LEGEND);
    let (x0, x1, keys): (f64, f64, Vec<f64>) = match &fig.x {
        XAxis::Ks(ks) => {
            let keys: Vec<f64> = ks.iter().map(|&k| (k as f64).log2()).collect();
            let last = *keys.last().unwrap_or(&0.0);
            (-0.3, last + 0.3, keys)
        }
        XAxis::Ops(ops, _) => {
            let keys: Vec<f64> = ops.iter().map(|&o| f64::from(o)).collect();
            (keys[0] - 0.6, keys[keys.len() - 1] + 0.6, keys)
        }
    };
    let labels: Vec<(f64, String)> = match &fig.x {
        XAxis::Ks(ks) => keys
            .iter()
            .zip(ks)
            .map(|(&x, k)| (x, k.to_string()))
            .collect(),
        XAxis::Ops(ops, _) => keys
            .iter()
            .zip(ops)
            .map(|(&x, o)| (x, o.to_string()))
            .collect(),
    };
    let label_of = move |x: &f64| {
        labels
            .iter()
            .find(|(v, _)| (v - x).abs() < 1e-9)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(&fig.title, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(
            Keyed {
                lo: x0,
                hi: x1,
                keys,
            },
            Keyed {
                lo: -0.02,
                hi: Y_TOP,
                keys: (0..=10).map(|i| f64::from(i) / 10.0).collect(),
            },
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(fig.x_desc.as_str())
        .y_desc(fig.y_desc.as_str())
        .x_label_formatter(&label_of)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(e)?;

    if let XAxis::Ops(_, bands) = &fig.x {
        for (i, (lo, hi, name)) in bands.iter().enumerate() {
            let (a, b) = (f64::from(*lo) - 0.5, f64::from(*hi) + 0.5);
            let (a, b) = (a.max(x0), b.min(x1));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, -0.02), (b, Y_TOP)],
                    BANDS[i % 2].mix(0.6).filled(),
                )))
                .map_err(e)?;
            for x in [a, b] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, -0.02), (x, Y_TOP)],
                        RGBColor(150, 150, 150).stroke_width(1),
                    )))
                    .map_err(e)?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (a + 0.08, 1.075),
                    (FAMILY, 13).into_font().color(&RGBColor(60, 60, 60)),
                )))
                .map_err(e)?;
        }
    }

    for (i, (_, points)) in fig.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = points.iter().map(|(x, s)| (fig.x_of(*x), s.mean)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
        chart
            .draw_series(points.iter().filter_map(|(x, s)| {
                let sd = s.std?;
                Some(ErrorBar::new_vertical(
                    fig.x_of(*x),
                    (s.mean - sd).max(0.0),
                    s.mean,
                    (s.mean + sd).min(1.0),
                    color.stroke_width(1),
                    10,
                ))
            }))
            .map_err(e)?;
    }

    // The legend, beside the chart so that it never hides a line.
    let font = (FAMILY, 15).into_font();
    legend
        .draw(&Text::new("model", (12, 60), font.clone()))
        .map_err(e)?;
    let mut y = 92;
    for (i, (name, _)) in fig.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        legend
            .draw(&PathElement::new(
                vec![(12, y), (44, y)],
                color.stroke_width(3),
            ))
            .map_err(e)?;
        legend
            .draw(&Circle::new((28, y), 4, color.filled()))
            .map_err(e)?;
        legend
            .draw(&Text::new(
                name.clone(),
                (52, y),
                TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        y += 28;
    }
    y += 12;
    for line in fig.note.lines() {
        legend
            .draw(&Text::new(
                line.to_string(),
                (12, y),
                (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(e)?;
        y += 18;
    }
    Ok(())
}
