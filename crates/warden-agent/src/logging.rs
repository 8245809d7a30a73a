//! Log lines in Patroni's default format: `YYYY-MM-DD HH:MM:SS,mmm LEVEL: message`.
//!
//! Operators and Patroni's acceptance scenarios match lines by position (the level
//! starts at column 24), so the layout is fixed. Levels are Patroni's names
//! (`WARNING`, not `WARN`); a fatal exit prints `CRITICAL`.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct PatroniFormat;

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "DEBUG",
    }
}

/// Current local time as Python's logging `asctime`.
pub fn asctime() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}

impl<S, N> FormatEvent<S, N> for PatroniFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "{} {}: ",
            asctime(),
            level_name(event.metadata().level())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the global subscriber. `level` is Patroni's `log.level` (INFO by default).
pub fn init(level: &str) {
    let lvl = match level.to_ascii_uppercase().as_str() {
        "DEBUG" => tracing::level_filters::LevelFilter::DEBUG,
        "WARN" | "WARNING" => tracing::level_filters::LevelFilter::WARN,
        "ERROR" | "CRITICAL" | "FATAL" => tracing::level_filters::LevelFilter::ERROR,
        _ => tracing::level_filters::LevelFilter::INFO,
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(lvl)
        // Library chatter (h2, tonic, hyper) stays out of the operator's log.
        .with_target("h2", tracing::level_filters::LevelFilter::WARN)
        .with_target("tonic", tracing::level_filters::LevelFilter::WARN)
        .with_target("hyper", tracing::level_filters::LevelFilter::WARN)
        .with_target("tower", tracing::level_filters::LevelFilter::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(PatroniFormat);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(targets)
        .try_init();
}

/// Prints a CRITICAL line (tracing has no such level) — used right before a fatal exit.
pub fn critical(msg: &str) {
    eprintln!("{} CRITICAL: {msg}", asctime());
}
