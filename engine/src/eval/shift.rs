//! A model-free ("blind") check that two sets of samples come from the same
//! distribution. A logistic regression on coarse pixels (8×8 average-pooled,
//! standardised) tries to tell set A from set B; each half of the data is
//! scored by a model fitted on the other half, and the out-of-fold AUC says how
//! separable the inputs are without ever looking at the attacked model. Near
//! 0.5: no shift an attack could exploit. Well above: the sets differ, and a
//! membership attack's AUC partly measures that difference.
//!
//! Like any cross-validated AUC on sets that do not differ, the estimate
//! scatters around, and tends to fall slightly *below*, 0.5 (each held-out half
//! is what its fold's fit did not see: on the demo's forget set against the
//! validation split it reads about 0.44–0.49). Only a clear excess above 0.5
//! is flagged ([`crate::metrics::sanity::input_shift`]).

use serde::Serialize;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::EvalError;
use crate::data::{Dataset, SplitMix64};
use crate::metrics::{Interval, MetricOptions, membership_metrics};
use crate::train::augment::to_unit_float;

/// Result of [`input_shift`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShiftCheck {
    /// What was compared.
    pub what: String,
    /// Samples of each set used.
    pub samples: (usize, usize),
    /// Out-of-fold AUC of the pixel classifier (0.5 = indistinguishable).
    pub auc: f64,
    /// Its bootstrap interval.
    pub auc_ci: Option<Interval>,
}

/// At most this many samples of each set are used: enough for a stable AUC,
/// cheap for any dataset.
const MAX_PER_SET: usize = 3000;

fn pixels(dataset: &Dataset, rows: &[i64], device: Device) -> Result<Tensor, EvalError> {
    let x = to_unit_float(&dataset.subset(rows)?.images().f_to_device(device)?);
    Ok(x.f_adaptive_avg_pool2d([8, 8])?.f_flatten(1, -1)?)
}

/// Fits on `(xa, xb)` and returns the scores of `(ta, tb)`.
fn fit_and_score(
    xa: &Tensor,
    xb: &Tensor,
    ta: &Tensor,
    tb: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let x = Tensor::f_cat(&[xa, xb], 0)?;
    let mean = x.f_mean_dim([0i64].as_slice(), true, Kind::Float)?;
    let std = x
        .f_std_dim([0i64].as_slice(), false, true)?
        .f_clamp_min(1e-6)?;
    let scale = |t: &Tensor| -> Result<Tensor, EvalError> { Ok(t.f_sub(&mean)?.f_div(&std)?) };
    let x = scale(&x)?;
    let (na, nb) = (xa.size()[0], xb.size()[0]);
    let device = x.device();
    let y = Tensor::f_cat(
        &[
            Tensor::f_ones([na], (Kind::Float, device))?,
            Tensor::f_zeros([nb], (Kind::Float, device))?,
        ],
        0,
    )?;
    // Equal total weight per set, so an unbalanced pair does not just learn the prior.
    let w = Tensor::f_cat(
        &[
            Tensor::f_full([na], 0.5 / na as f64, (Kind::Float, device))?,
            Tensor::f_full([nb], 0.5 / nb as f64, (Kind::Float, device))?,
        ],
        0,
    )?;
    let vs = nn::VarStore::new(device);
    let lin = nn::linear(vs.root(), x.size()[1], 1, Default::default());
    let mut opt = nn::Adam {
        wd: 1e-3,
        ..Default::default()
    }
    .build(&vs, 0.05)?;
    for _ in 0..200 {
        let logits = lin.forward(&x).f_squeeze_dim(1)?;
        let loss = logits
            .f_binary_cross_entropy_with_logits::<Tensor>(&y, None, None, tch::Reduction::None)?
            .f_mul(&w)?
            .f_sum(Kind::Float)?;
        opt.backward_step(&loss);
    }
    let _guard = tch::no_grad_guard();
    let score = |t: &Tensor| -> Result<Vec<f64>, EvalError> {
        Ok(Vec::<f64>::try_from(
            lin.forward(&scale(t)?)
                .f_squeeze_dim(1)?
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?,
        )?)
    };
    Ok((score(ta)?, score(tb)?))
}

/// How separable the inputs at rows `a` and `b` of `dataset` are (seeded
/// subsampling, 2-fold cross-fitting, bootstrap interval from `opts`).
pub fn input_shift(
    what: &str,
    dataset: &Dataset,
    a: &[i64],
    b: &[i64],
    device: Device,
    opts: &MetricOptions,
) -> Result<Option<ShiftCheck>, EvalError> {
    if a.len() < 4 || b.len() < 4 {
        return Ok(None);
    }
    let mut rng = SplitMix64::new(opts.seed ^ 0x5348_4946_5443_4845);
    let mut sample = |rows: &[i64]| {
        let mut r = rows.to_vec();
        rng.shuffle(&mut r);
        r.truncate(MAX_PER_SET);
        r
    };
    let (a, b) = (sample(a), sample(b));
    tch::manual_seed(i64::from_ne_bytes(opts.seed.to_ne_bytes()));
    let (xa, xb) = (pixels(dataset, &a, device)?, pixels(dataset, &b, device)?);
    let half = |t: &Tensor, first: bool| -> Result<Tensor, EvalError> {
        let n = t.size()[0];
        let h = n / 2;
        Ok(if first {
            t.f_narrow(0, 0, h)?
        } else {
            t.f_narrow(0, h, n - h)?
        })
    };
    let (a1, a2, b1, b2) = (
        half(&xa, true)?,
        half(&xa, false)?,
        half(&xb, true)?,
        half(&xb, false)?,
    );
    let (sa2, sb2) = fit_and_score(&a1, &b1, &a2, &b2)?;
    let (sa1, sb1) = fit_and_score(&a2, &b2, &a1, &b1)?;
    let sa: Vec<f64> = sa1.into_iter().chain(sa2).collect();
    let sb: Vec<f64> = sb1.into_iter().chain(sb2).collect();
    Ok(
        membership_metrics(&sa, &sb, None, opts).map(|m| ShiftCheck {
            what: what.to_string(),
            samples: (a.len(), b.len()),
            auc: m.auc,
            auc_ci: m.auc_ci,
        }),
    )
}
