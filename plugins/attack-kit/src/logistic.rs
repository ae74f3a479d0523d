//! Binary logistic regression with an L2 penalty, solved by Newton's method:
//! the same objective as scikit-learn's `LogisticRegression(C=…)` (penalised
//! weights, free intercept), so the fitted model matches it to solver precision.
//! EncoderMI's classifier variant runs it on the sorted pairwise similarities.

use crate::Features;

/// A fitted model: `z = w·x + b`, member when `z > 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// Weights.
    pub weights: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
    /// Newton steps taken.
    pub iterations: usize,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(-z))` without overflow.
fn log1p_exp_neg(z: f64) -> f64 {
    if z > 0.0 {
        (-z).exp().ln_1p()
    } else {
        -z + z.exp().ln_1p()
    }
}

/// Solves `a x = b` for a symmetric positive-definite `a` (row-major, n×n) by
/// Cholesky; `None` when `a` is not positive definite.
fn solve_spd(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

impl Logistic {
    /// Minimises `½‖w‖² + C Σ log(1 + exp(−s_i (w·x_i + b)))`, `s_i = ±1`.
    /// `None` when a class is missing or `c` is not positive.
    pub fn fit(x: &Features, member: &[bool], c: f64) -> Option<Logistic> {
        let n = x.len();
        let d = x.dim();
        if member.len() != n || c.is_nan() || c <= 0.0 {
            return None;
        }
        let pos = member.iter().filter(|m| **m).count();
        if pos == 0 || pos == n {
            return None;
        }
        let s: Vec<f64> = member.iter().map(|&m| if m { 1.0 } else { -1.0 }).collect();
        // θ = (w, b); the intercept is the last coordinate and is not penalised.
        let p = d + 1;
        let mut theta = vec![0.0; p];
        let z_of = |theta: &[f64], i: usize| -> f64 {
            x.row(i).iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[d]
        };
        let objective = |theta: &[f64]| -> f64 {
            let reg: f64 = theta[..d].iter().map(|w| w * w).sum::<f64>() * 0.5;
            reg + c
                * (0..n)
                    .map(|i| log1p_exp_neg(s[i] * z_of(theta, i)))
                    .sum::<f64>()
        };
        let mut iterations = 0;
        for _ in 0..100 {
            let mut grad = vec![0.0; p];
            let mut hess = vec![0.0; p * p];
            for (k, g) in grad.iter_mut().enumerate().take(d) {
                *g = theta[k];
                hess[k * p + k] = 1.0;
            }
            for (i, &si) in s.iter().enumerate() {
                let z = z_of(&theta, i);
                let sig = sigmoid(z);
                // d/dz of log(1 + exp(-s z)) is sigmoid(z) − [s = +1].
                let r = c * (sig - if si > 0.0 { 1.0 } else { 0.0 });
                let w = c * sig * (1.0 - sig);
                let xi = x.row(i);
                for a in 0..p {
                    let xa = if a < d { xi[a] } else { 1.0 };
                    grad[a] += r * xa;
                    for b in 0..=a {
                        let xb = if b < d { xi[b] } else { 1.0 };
                        hess[a * p + b] += w * xa * xb;
                    }
                }
            }
            for a in 0..p {
                for b in 0..a {
                    hess[b * p + a] = hess[a * p + b];
                }
            }
            let gnorm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            if gnorm < 1e-9 * (1.0 + c * n as f64) {
                break;
            }
            // A tiny ridge keeps the unpenalised intercept's block invertible when
            // the data separate perfectly.
            hess[d * p + d] += 1e-12;
            let step = solve_spd(&hess, &grad, p)?;
            // Backtracking keeps every step a descent step far from the optimum.
            let f0 = objective(&theta);
            let mut t = 1.0;
            let mut next: Vec<f64>;
            loop {
                next = theta.iter().zip(&step).map(|(a, b)| a - t * b).collect();
                if objective(&next) <= f0 || t < 1e-10 {
                    break;
                }
                t *= 0.5;
            }
            theta = next;
            iterations += 1;
        }
        Some(Logistic {
            intercept: theta[d],
            weights: theta[..d].to_vec(),
            iterations,
        })
    }

    /// `w·x + b` per row (the log-odds of membership).
    pub fn decision_function(&self, x: &Features) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                x.row(i)
                    .iter()
                    .zip(&self.weights)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    + self.intercept
            })
            .collect()
    }
}

/// Per-column centring and scaling fitted on one set and applied to others
/// (scikit-learn's `StandardScaler`: population standard deviation, constant
/// columns left unscaled).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardizer {
    /// Column means and standard deviations of `x`.
    pub fn fit(x: &Features) -> Standardizer {
        let (n, d) = (x.len().max(1) as f64, x.dim());
        let mut mean = vec![0.0; d];
        for i in 0..x.len() {
            for (m, v) in mean.iter_mut().zip(x.row(i)) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; d];
        for i in 0..x.len() {
            for ((s, v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        let scale = var
            .iter()
            .map(|v| if *v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        Standardizer { mean, scale }
    }

    /// `(x − mean) / scale`, column by column.
    pub fn apply(&self, x: &Features) -> Features {
        let d = x.dim();
        let data = x
            .data()
            .iter()
            .enumerate()
            .map(|(k, v)| (v - self.mean[k % d]) / self.scale[k % d])
            .collect();
        Features::new(data, d).unwrap_or_default()
    }
}
