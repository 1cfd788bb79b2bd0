//! The connection options every client command shares (`sql`, `dsl`, `query`, `job`): one
//! flag name, one environment variable and one default each.

use clap::Args;

/// Which server to talk to, and as whom.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the rigwatch server (`--url` is accepted too).
    #[arg(
        long = "server",
        alias = "url",
        global = true,
        env = "RIGWATCH_SERVER",
        default_value = "http://127.0.0.1:9800"
    )]
    pub server: String,

    /// Access token: admin, analyst or supplier (a supplier's token sees only its own
    /// rows and series; submitting or ending jobs needs admin).
    #[arg(long, global = true, env = "RIGWATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Connection {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// `req` with the token as a bearer credential, if there is one.
    pub fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}
