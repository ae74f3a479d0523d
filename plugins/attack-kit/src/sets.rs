//! Which samples an attack fits on and which it is judged on.
//!
//! As in the Unlearn-Sparse / SalUn and Alignment Calibration evaluations, the
//! attack is fitted on the model itself: **shadow members** come from the retain
//! split, **shadow non-members** from the test split. The target is the forget
//! split. So that the engine can measure the attack without the bias of scoring
//! its own training data, two **held-out** sets are kept out of the fit:
//! non-members from the validation split (or, without one, every other test row,
//! the rest being the shadow non-members) and as many further retain rows as
//! members.
//!
//! The reference code takes the *first* retain rows; here retain and test are
//! read in the job's seeded shuffled order first, because split rows are sorted
//! by sample index and datasets are often sorted by class (the demo's MNIST is),
//! so "the first N" would be a few classes only. Forget rows keep their split
//! order, so forget scores line up with the forget list; so does the validation
//! split unless only part of it is used.

use lethe_plugin_api::schema::ParamSpec;
use lethe_plugin_api::sdk::{HostContext, Params, PluginError, Split};
use lethe_plugin_api::tch::{Kind, Tensor};
use serde_json::{Value, json};

/// Caps on the role sizes, from the attack's parameters (0 = no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizes {
    /// Shadow members, and as many shadow non-members.
    pub shadow: usize,
    /// Held-out non-members (and at most as many held-out members).
    pub heldout: usize,
}

impl Sizes {
    /// The `shadow_size` and `heldout_size` parameters.
    pub fn params() -> [ParamSpec; 2] {
        [
            ParamSpec::int("shadow_size", "Shadow set size", 0, 10_000_000, 0)
                .group("Data")
                .help(
                    "Shadow members (retain) and as many shadow non-members (test) the attack is \
                     fitted on; 0 = as many as both splits allow. Lower it to go faster.",
                ),
            ParamSpec::int("heldout_size", "Held-out set size", 0, 10_000_000, 0)
                .group("Data")
                .help(
                    "Held-out non-members (validation) and members (retain) the attack is judged \
                     on beside the forget set; 0 = the whole validation split.",
                ),
        ]
    }

    /// Reads them from validated parameters.
    pub fn from_params(params: &Params) -> Result<Sizes, PluginError> {
        let get = |k: &str| -> Result<usize, PluginError> {
            Ok(usize::try_from(params.i64(k)?).unwrap_or(0))
        };
        Ok(Sizes {
            shadow: get("shadow_size")?,
            heldout: get("heldout_size")?,
        })
    }
}

/// How many rows of which split play each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// First rows of the shuffled retain split.
    pub shadow_members: usize,
    /// The shuffled retain rows right after them.
    pub heldout_members: usize,
    /// Shuffled test rows used as shadow non-members.
    pub shadow_nonmembers: usize,
    /// Held-out non-member rows.
    pub heldout_nonmembers: usize,
    /// Whether held-out non-members come from the validation split (else from
    /// the odd rows of the shuffled test split, the shadow ones being the even).
    pub validation_heldout: bool,
    /// Rows of the forget split (all of them).
    pub forget: usize,
    /// Whether only part of the validation split is used: it is then drawn in
    /// the job's shuffled order rather than the (index-sorted) split order.
    pub validation_sampled: bool,
}

impl Plan {
    /// Plans the roles for split sizes. The shadow sets are equally large: as
    /// many as the retain split and the test pool allow, capped by
    /// `shadow_size` when it is not 0.
    pub fn new(
        retain: usize,
        validation: usize,
        test: usize,
        forget: usize,
        sizes: Sizes,
    ) -> Result<Plan, PluginError> {
        let Sizes {
            shadow: shadow_size,
            heldout: heldout_size,
        } = sizes;
        if test == 0 {
            return Err(PluginError::msg(
                "the attack needs non-members: the job has no test samples",
            ));
        }
        if retain == 0 {
            return Err(PluginError::msg(
                "the attack needs members: the job has no retain samples",
            ));
        }
        let validation_heldout = validation > 0;
        let (test_pool, mut heldout_nonmembers) = if validation_heldout {
            (test, validation)
        } else {
            (test.div_ceil(2), test / 2)
        };
        if heldout_size > 0 {
            heldout_nonmembers = heldout_nonmembers.min(heldout_size);
        }
        let validation_sampled = validation_heldout && heldout_nonmembers < validation;
        // Balanced shadow sets, as in the reference code (whose retain set is
        // larger than its test set): an SVM fitted on 1 member to 4 non-members
        // learns the prior and calls everything a non-member.
        let mut shadow = retain.min(test_pool);
        if shadow_size > 0 {
            shadow = shadow.min(shadow_size);
        }
        if shadow == 0 {
            return Err(PluginError::msg(
                "the attack needs at least two test samples without a validation split",
            ));
        }
        let (shadow_members, shadow_nonmembers) = (shadow, shadow);
        let heldout_members = (retain - shadow_members).min(heldout_nonmembers);
        Ok(Plan {
            shadow_members,
            heldout_members,
            shadow_nonmembers,
            heldout_nonmembers,
            validation_heldout,
            forget,
            validation_sampled,
        })
    }

    /// Plans from the job's split sizes.
    pub fn for_job(ctx: &mut HostContext, sizes: Sizes) -> Result<Plan, PluginError> {
        let mut len = |s: Split| -> Result<usize, PluginError> {
            Ok(ctx.data_len(s)?.map_or(0, |n| n as usize))
        };
        let (r, v, t, f) = (
            len(Split::Retain)?,
            len(Split::Validation)?,
            len(Split::Test)?,
            len(Split::Forget)?,
        );
        Plan::new(r, v, t, f, sizes)
    }

    /// The roles as recorded in the attack's summary.
    pub fn to_json(&self) -> Value {
        json!({
            "shadow_members": {"split": "retain", "order": "job-seeded shuffle", "rows": format!("0..{}", self.shadow_members)},
            "shadow_nonmembers": if self.validation_heldout {
                json!({"split": "test", "order": "job-seeded shuffle", "rows": format!("0..{}", self.shadow_nonmembers)})
            } else {
                json!({"split": "test", "order": "job-seeded shuffle", "rows": format!("even positions, first {}", self.shadow_nonmembers)})
            },
            "target": {"split": "forget", "order": "split order", "rows": self.forget},
            "heldout_members": {"split": "retain", "order": "job-seeded shuffle", "rows": format!("{}..{}", self.shadow_members, self.shadow_members + self.heldout_members)},
            "heldout_nonmembers": if self.validation_heldout {
                json!({
                    "split": "validation",
                    "order": if self.validation_sampled { "job-seeded shuffle" } else { "split order" },
                    "rows": self.heldout_nonmembers,
                })
            } else {
                json!({"split": "test", "order": "job-seeded shuffle", "rows": format!("odd positions, {}", self.heldout_nonmembers)})
            },
        })
    }
}

/// One sample's attack features and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Whatever the attack computes per sample (probabilities, similarities).
    pub features: Vec<f64>,
    /// The true class.
    pub label: usize,
}

/// The samples of each role, in split order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// Fitting: members.
    pub shadow_members: Vec<Sample>,
    /// Fitting: non-members.
    pub shadow_nonmembers: Vec<Sample>,
    /// The target: the forget split.
    pub forget: Vec<Sample>,
    /// Held-out members (may be empty).
    pub members: Vec<Sample>,
    /// Held-out non-members.
    pub nonmembers: Vec<Sample>,
}

/// Turns a batch into one feature row per sample.
pub type PerBatch<'a> =
    dyn FnMut(&mut HostContext, &Tensor, &Tensor) -> Result<Vec<Vec<f64>>, PluginError> + 'a;

/// Runs `per_batch` over the first `limit` rows of `split` (in split order or
/// the job's seeded shuffle, not augmented), checking for cancellation and
/// reporting progress.
fn collect(
    ctx: &mut HostContext,
    split: Split,
    shuffle: bool,
    limit: usize,
    batch: u32,
    per_batch: &mut PerBatch<'_>,
    progress: &mut dyn FnMut(&HostContext, usize),
) -> Result<Vec<Sample>, PluginError> {
    let mut out = Vec::with_capacity(limit);
    if limit == 0 {
        return Ok(out);
    }
    for b in ctx.batches(split, batch, shuffle, false)? {
        ctx.check_cancelled()?;
        let (x, y) = b?;
        let want = (limit - out.len()).min(x.size().first().copied().unwrap_or(0) as usize);
        let (x, y) = (
            x.f_narrow(0, 0, want as i64)?,
            y.f_narrow(0, 0, want as i64)?,
        );
        let rows = per_batch(ctx, &x, &y)?;
        let labels = Vec::<i64>::try_from(y.f_to_kind(Kind::Int64)?)?;
        if rows.len() != labels.len() {
            return Err(PluginError::msg(format!(
                "the attack produced {} rows for a batch of {}",
                rows.len(),
                labels.len()
            )));
        }
        out.extend(rows.into_iter().zip(labels).map(|(features, l)| Sample {
            features,
            label: usize::try_from(l).unwrap_or(usize::MAX),
        }));
        progress(ctx, want);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Gathers every role's samples through `per_batch`.
pub fn gather(
    ctx: &mut HostContext,
    plan: &Plan,
    batch: u32,
    per_batch: &mut PerBatch<'_>,
) -> Result<Gathered, PluginError> {
    let total = plan.shadow_members
        + plan.heldout_members
        + plan.forget
        + plan.shadow_nonmembers
        + plan.heldout_nonmembers;
    let mut done = 0usize;
    let mut progress = |ctx: &HostContext, n: usize| {
        done += n;
        ctx.progress(
            (0.9 * done as f64 / total.max(1) as f64).min(0.9),
            &format!("scored {done}/{total} samples"),
        );
    };
    let mut retain = collect(
        ctx,
        Split::Retain,
        true,
        plan.shadow_members + plan.heldout_members,
        batch,
        per_batch,
        &mut progress,
    )?;
    let members = retain.split_off(plan.shadow_members.min(retain.len()));
    let forget = collect(
        ctx,
        Split::Forget,
        false,
        plan.forget,
        batch,
        per_batch,
        &mut progress,
    )?;
    let (shadow_nonmembers, nonmembers) = if plan.validation_heldout {
        let test = collect(
            ctx,
            Split::Test,
            true,
            plan.shadow_nonmembers,
            batch,
            per_batch,
            &mut progress,
        )?;
        let val = collect(
            ctx,
            Split::Validation,
            plan.validation_sampled,
            plan.heldout_nonmembers,
            batch,
            per_batch,
            &mut progress,
        )?;
        (test, val)
    } else {
        let test = collect(
            ctx,
            Split::Test,
            true,
            2 * plan.heldout_nonmembers.max(plan.shadow_nonmembers),
            batch,
            per_batch,
            &mut progress,
        )?;
        let (mut even, mut odd) = (Vec::new(), Vec::new());
        for (i, s) in test.into_iter().enumerate() {
            if i % 2 == 0 {
                even.push(s);
            } else {
                odd.push(s);
            }
        }
        even.truncate(plan.shadow_nonmembers);
        odd.truncate(plan.heldout_nonmembers);
        (even, odd)
    };
    Ok(Gathered {
        shadow_members: retain,
        shadow_nonmembers,
        forget,
        members,
        nonmembers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_balance_the_shadow_sets_and_keep_held_out_sets_apart() {
        // The demo: 5700 retain, 1000 validation, 3000 test, 300 forget.
        let p = Plan::new(5700, 1000, 3000, 300, Sizes::default()).unwrap();
        assert_eq!(
            (
                p.shadow_members,
                p.shadow_nonmembers,
                p.heldout_members,
                p.heldout_nonmembers
            ),
            (3000, 3000, 1000, 1000)
        );
        assert!(p.validation_heldout);
        let capped = Plan::new(
            5700,
            1000,
            3000,
            300,
            Sizes {
                shadow: 500,
                heldout: 0,
            },
        )
        .unwrap();
        assert_eq!(
            (capped.shadow_members, capped.shadow_nonmembers),
            (500, 500)
        );
        assert_eq!(capped.heldout_members, 1000);
        let small = Plan::new(
            5700,
            1000,
            3000,
            300,
            Sizes {
                shadow: 200,
                heldout: 300,
            },
        )
        .unwrap();
        assert_eq!(
            (
                small.shadow_members,
                small.heldout_members,
                small.heldout_nonmembers
            ),
            (200, 300, 300)
        );
        // No validation: test halves.
        let p = Plan::new(100, 0, 41, 5, Sizes::default()).unwrap();
        assert_eq!((p.shadow_nonmembers, p.heldout_nonmembers), (21, 20));
        assert_eq!((p.shadow_members, p.heldout_members), (21, 20));
        // Few retain rows: all go to the shadow set, and the non-members match.
        let p = Plan::new(10, 50, 50, 5, Sizes::default()).unwrap();
        assert_eq!(
            (p.shadow_members, p.shadow_nonmembers, p.heldout_members),
            (10, 10, 0)
        );
        assert!(Plan::new(10, 5, 0, 5, Sizes::default()).is_err());
        assert!(Plan::new(0, 5, 5, 5, Sizes::default()).is_err());
    }
}
