//! The rate card's history, kept as rows of table `rate_card` (tag `model`, field
//! `rate_micro_per_gpu_hour`, time = when the price took effect), so that time accrued after
//! a restart or on another node is priced as it was when it was worked.
//!
//! At start the card is the catalog's illustrative prices, then every stored change in time
//! order, then this start's prices (`--rate`) where they differ from the stored price now: a
//! model named on the command line gets its flag's price from now on, a model no longer named
//! goes back to the illustrative price from now on. Without the history, the minute open at
//! a crash (or a failover) would be priced at whatever the next process started with.
//! The table has no `supplier` tag, so suppliers never see it; operators read it with SQL.

use anyhow::Context;
use rigwatch_query::QueryService;
use rigwatch_scheduler::RateCard;
use rigwatch_storage::{FieldValue, WriteBatch};

use super::rows::rows;

/// The table of price changes.
pub(super) const RATE_TABLE: &str = rigwatch_common::tables::RATE_CARD;

/// The card in force and the rows of the changes this start makes (to be stored before
/// anything is accrued with them).
pub(super) async fn load_card(
    q: &QueryService,
    flags: &[(String, i64)],
    now_ms: i64,
) -> anyhow::Result<(RateCard, WriteBatch)> {
    let mut card = RateCard::illustrative();
    let stored = rows(
        q,
        RATE_TABLE,
        &format!(
            "SELECT model, rate_micro_per_gpu_hour AS rate, CAST(time AS BIGINT) / 1000000 AS at \
             FROM {RATE_TABLE} ORDER BY time, model"
        ),
    )
    .await?;
    let mut models: Vec<String> = Vec::new();
    for r in stored.iter() {
        let model = r.req_str("model")?.to_string();
        let (rate, at) = (r.req_i64("rate")?, r.req_i64("at")?);
        card.set_rate(&model, at, rate)
            .with_context(|| format!("stored price change of {model} at {at} ms"))?;
        models.push(model);
    }
    let illustrative = RateCard::illustrative();
    let mut targets: Vec<(String, i64)> = flags.to_vec();
    for m in models {
        let named = flags.iter().any(|(f, _)| {
            rigwatch_scheduler::gpu_models::canonical_or_same(f)
                .eq_ignore_ascii_case(rigwatch_scheduler::gpu_models::canonical_or_same(&m))
        });
        if !named && !targets.iter().any(|(t, _)| t == &m) {
            targets.push((m.clone(), illustrative.rate_at(&m, now_ms)));
        }
    }
    let mut changes = WriteBatch::default();
    for (model, rate) in targets {
        if card.rate_at(&model, now_ms) == rate {
            continue;
        }
        // A change stored at a later time than now (a clock that went back) keeps order.
        card.set_rate(&model, now_ms, rate)
            .with_context(|| format!("price of {model} from now on"))?;
        let model = rigwatch_scheduler::gpu_models::canonical_or_same(&model);
        let mut row = changes.row(RATE_TABLE, now_ms.saturating_mul(1_000_000));
        row.tag("model", model)
            .field("rate_micro_per_gpu_hour", FieldValue::I64(rate));
        let _ = row.finish(0);
    }
    Ok((card, changes))
}
