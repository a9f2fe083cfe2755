//! `courier sim`: flags and the foreground run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{AckTiming, SimConfig, Simulator};
use courier::browser::selectors::Selectors;

/// Flags of `courier sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9300", env = "COURIER_SIM_LISTEN")]
    pub listen: SocketAddr,
    /// Lifetime of the first QR ref.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub first_ref: Duration,
    /// Lifetime of each later QR ref.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub next_ref: Duration,
    /// Refs shown before the reload button appears.
    #[arg(long, default_value_t = 7)]
    pub max_refs: u32,
    /// Loading screen duration after a scan or on a restored session.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub loading: Duration,
    /// Default delay from receipt to one tick.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub ack_server: Duration,
    /// Default delay from one tick to two ticks.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ack_device: Duration,
    /// Default delay from two ticks to read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub ack_read: Duration,
    /// The DOM contract (default: config/selectors.toml if present, else the built-in copy).
    #[arg(long)]
    pub selectors: Option<PathBuf>,
}

impl SimArgs {
    /// The simulator configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            first_ref: self.first_ref,
            next_ref: self.next_ref,
            max_refs: self.max_refs,
            loading: self.loading,
            ack: AckTiming {
                server_ms: self.ack_server.as_millis() as u64,
                device_ms: self.ack_device.as_millis() as u64,
                read_ms: self.ack_read.as_millis() as u64,
                ..AckTiming::default()
            },
            ..SimConfig::default()
        }
    }
}

/// Runs the simulator until Ctrl-C / SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), courier::error::BoxError> {
    let selectors = match &args.selectors {
        Some(path) => Selectors::load(Some(path))?,
        None => Selectors::load_default()?,
    };
    let names = courier::browser::WaWeb::load_default()?;
    let sim = Simulator::start_with_names(args.listen, args.config(), selectors, names).await?;
    println!("WhatsApp Web simulator at {}", sim.url());
    println!("  page:    {}/?account=<account id>", sim.url());
    println!(
        "  control: {}/_control/accounts (see docs/simulator.md)",
        sim.url()
    );
    courier::shutdown::signal().await;
    sim.shutdown();
    Ok(())
}
