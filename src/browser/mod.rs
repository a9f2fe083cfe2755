//! The browser layer: the WhatsApp Web DOM contract ([`selectors`]) and the
//! WebDriver plumbing ([`driver`]): a local chromedriver and fantoccini
//! sessions on per-account Chromium profiles.

pub mod driver;
pub mod selectors;

pub use driver::{ChromeDriver, DriverError, DriverOptions};
pub use selectors::{AckLevel, Selectors};
