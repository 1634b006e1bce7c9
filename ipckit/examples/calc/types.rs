//! The calculator's request and answer, shared by the example server and client.

use serde::{Deserialize, Serialize};

/// A calculation.
#[derive(Serialize, Deserialize, Debug)]
pub enum Calc {
    Add(f64, f64),
    Sub(f64, f64),
    Mul(f64, f64),
    Div(f64, f64),
}

/// The answer: division by zero is an error the client shows, not a crash.
pub type Answer = Result<f64, String>;
