//! Forward passes that share a prefix: the choices of a multiple-choice example share their
//! context (METHODS.md §4.2), so the context runs once, keeps every layer's keys and values, and
//! each continuation runs from there (a KV cache). The math is the full pass's; only the order in
//! which the same products are summed changes.

use candle_core::{Module, Tensor};

use crate::error::Result;
use crate::model::config::Config;
use crate::model::decoder::{CausalLm, KeyValues, NoObserver, TokenBatch};

impl CausalLm {
    /// Runs `prefixes` (`[b, p]`, every row `p` real tokens) and returns each layer's keys and
    /// values, `[b, n_kv, p, d_h]`. `check` runs before every layer (cancellation).
    pub fn prefix_cache(
        &self,
        cfg: &Config,
        prefixes: &TokenBatch,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Vec<KeyValues>> {
        let ctx = self.context(cfg, prefixes)?;
        let mut h = self.embed(prefixes)?;
        let mut cache = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            check()?;
            let (out, kv) = layer.forward_after(i, &h, &ctx, None, &mut NoObserver)?;
            cache.push(kv);
            h = out;
        }
        Ok(cache)
    }

    /// `ĥ` (`[r, s, d]`) of `batch` (right-padded) at positions `p..p + s`, where row `j`
    /// continues row `rows[j]` of the prefixes that made `cache` (each of `p` tokens; an empty
    /// `cache` is no prefix).
    pub fn forward_after_prefix(
        &self,
        cfg: &Config,
        batch: &TokenBatch,
        cache: &[KeyValues],
        rows: &[u32],
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Tensor> {
        let p = cache.first().map(|kv| kv.k.dim(2)).transpose()?.unwrap_or(0);
        let ctx = self.context_after(cfg, batch, p)?;
        let rows = Tensor::new(rows, self.device())?;
        let mut h = self.embed(batch)?;
        for (i, layer) in self.layers.iter().enumerate() {
            check()?;
            let past = match cache.get(i) {
                Some(kv) => Some(KeyValues {
                    k: kv.k.index_select(&rows, 0)?,
                    v: kv.v.index_select(&rows, 0)?,
                }),
                None => None,
            };
            h = layer.forward_after(i, &h, &ctx, past.as_ref(), &mut NoObserver)?.0;
        }
        Ok(self.norm.forward(&h)?)
    }
}
