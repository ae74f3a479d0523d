//! A C-support-vector classifier with an RBF kernel, trained by SMO the way
//! libsvm (and so scikit-learn's `SVC`) does it: second-order working-set
//! selection (Fan, Chen & Lin, JMLR 2005), the same two-variable update and
//! clipping, the same bias (`rho`) rule and the same stopping tolerance. The
//! membership attacks of Unlearn-Sparse / SalUn use `SVC(C=3, gamma="auto")`;
//! this reproduces its decisions without a Python runtime in the plugin.
//!
//! Two simplifications, neither of which moves the optimum: no shrinking
//! (libsvm's speed heuristic), and an LRU kernel-row cache of a fixed byte
//! budget. Kernel rows are cached as `f32`, as libsvm's `Qfloat` does.

use crate::Features;
use std::collections::HashMap;
use std::rc::Rc;

/// libsvm's `TAU`: stands in for a non-positive curvature.
const TAU: f64 = 1e-12;

/// Settings of [`Svc::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct SvcConfig {
    /// Box constraint `C` (Unlearn-Sparse uses 3).
    pub c: f64,
    /// RBF width; `None` is scikit-learn's `gamma="auto"`, `1 / n_features`.
    pub gamma: Option<f64>,
    /// Stopping tolerance on the KKT violation (scikit-learn's `tol`, 1e-3).
    pub tol: f64,
    /// Kernel cache budget in bytes.
    pub cache_bytes: usize,
    /// Give up after this many SMO iterations (the model is still usable).
    pub max_iter: usize,
}

impl Default for SvcConfig {
    fn default() -> Self {
        SvcConfig {
            c: 3.0,
            gamma: None,
            tol: 1e-3,
            cache_bytes: 256 << 20,
            max_iter: 10_000_000,
        }
    }
}

/// Why an SVM could not be trained.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SvmError {
    /// Both classes are needed.
    #[error(
        "the SVM needs examples of both classes ({members} members, {non_members} non-members)"
    )]
    OneClass {
        /// Positive examples given.
        members: usize,
        /// Negative examples given.
        non_members: usize,
    },
    /// Labels and rows disagree, or a setting is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// A trained RBF SVM: `f(x) = Σ coef_i · exp(-γ‖sv_i − x‖²) − rho`, member when
/// `f(x) > 0` (scikit-learn's sign convention for `classes_ = [0, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Svc {
    support: Features,
    coef: Vec<f64>,
    rho: f64,
    gamma: f64,
    /// SMO iterations run.
    pub iterations: usize,
    /// Whether the solver stopped at `max_iter` rather than at the tolerance.
    pub hit_max_iter: bool,
}

fn rbf(a: &[f64], b: &[f64], gamma: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (-gamma * d2).exp()
}

/// Rows of `Q_ij = y_i y_j K(x_i, x_j)`, least recently used evicted first.
struct QCache<'a> {
    x: &'a Features,
    y: &'a [f64],
    gamma: f64,
    rows: HashMap<usize, (Rc<[f32]>, u64)>,
    capacity: usize,
    clock: u64,
}

impl QCache<'_> {
    fn row(&mut self, i: usize) -> Rc<[f32]> {
        self.clock += 1;
        if let Some((row, used)) = self.rows.get_mut(&i) {
            *used = self.clock;
            return Rc::clone(row);
        }
        if self.rows.len() >= self.capacity
            && let Some(oldest) = self
                .rows
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            self.rows.remove(&oldest);
        }
        let xi = self.x.row(i);
        let yi = self.y[i];
        let row: Rc<[f32]> = (0..self.x.len())
            .map(|k| (yi * self.y[k] * rbf(xi, self.x.row(k), self.gamma)) as f32)
            .collect();
        self.rows.insert(i, (Rc::clone(&row), self.clock));
        row
    }
}

impl Svc {
    /// Trains on rows `x` labelled `member` (true = positive class).
    pub fn fit(x: &Features, member: &[bool], cfg: &SvcConfig) -> Result<Svc, SvmError> {
        let n = x.len();
        if member.len() != n {
            return Err(SvmError::Invalid(format!(
                "{n} rows but {} labels",
                member.len()
            )));
        }
        if !(cfg.c > 0.0 && cfg.c.is_finite()) {
            return Err(SvmError::Invalid(format!(
                "C must be positive, got {}",
                cfg.c
            )));
        }
        let members = member.iter().filter(|m| **m).count();
        if members == 0 || members == n {
            return Err(SvmError::OneClass {
                members,
                non_members: n - members,
            });
        }
        if x.data().iter().any(|v| !v.is_finite()) {
            return Err(SvmError::Invalid("a feature is NaN or infinite".into()));
        }
        let gamma = cfg.gamma.unwrap_or(1.0 / x.dim().max(1) as f64);
        let c = cfg.c;
        let y: Vec<f64> = member.iter().map(|&m| if m { 1.0 } else { -1.0 }).collect();
        let mut alpha = vec![0.0f64; n];
        // Gradient of ½αᵀQα − eᵀα at α = 0.
        let mut g = vec![-1.0f64; n];
        // K(x, x) = 1 for the RBF kernel, so Q's diagonal is 1.
        let qd = 1.0f64;
        let capacity = (cfg.cache_bytes / (4 * n).max(1)).max(2);
        let mut cache = QCache {
            x,
            y: &y,
            gamma,
            rows: HashMap::new(),
            capacity,
            clock: 0,
        };
        let upper = |a: f64| a >= c;
        let lower = |a: f64| a <= 0.0;

        let mut iterations = 0;
        let mut hit_max_iter = false;
        loop {
            if iterations >= cfg.max_iter {
                hit_max_iter = true;
                break;
            }
            // Working set, libsvm's select_working_set (WSS 2).
            let mut gmax = f64::NEG_INFINITY;
            let mut i_sel: Option<usize> = None;
            for t in 0..n {
                if y[t] > 0.0 {
                    if !upper(alpha[t]) && -g[t] >= gmax {
                        gmax = -g[t];
                        i_sel = Some(t);
                    }
                } else if !lower(alpha[t]) && g[t] >= gmax {
                    gmax = g[t];
                    i_sel = Some(t);
                }
            }
            let Some(i) = i_sel else { break };
            let qi = cache.row(i);
            let mut gmax2 = f64::NEG_INFINITY;
            let mut j_sel: Option<usize> = None;
            let mut obj_diff_min = f64::INFINITY;
            for t in 0..n {
                let (grad_diff, quad) = if y[t] > 0.0 {
                    if lower(alpha[t]) {
                        continue;
                    }
                    if g[t] >= gmax2 {
                        gmax2 = g[t];
                    }
                    (gmax + g[t], qd + qd - 2.0 * y[i] * f64::from(qi[t]))
                } else {
                    if upper(alpha[t]) {
                        continue;
                    }
                    if -g[t] >= gmax2 {
                        gmax2 = -g[t];
                    }
                    (gmax - g[t], qd + qd + 2.0 * y[i] * f64::from(qi[t]))
                };
                if grad_diff > 0.0 {
                    let obj_diff = -(grad_diff * grad_diff) / if quad > 0.0 { quad } else { TAU };
                    if obj_diff <= obj_diff_min {
                        j_sel = Some(t);
                        obj_diff_min = obj_diff;
                    }
                }
            }
            let j = match j_sel {
                Some(j) if gmax + gmax2 >= cfg.tol => j,
                _ => break,
            };
            iterations += 1;
            let qj = cache.row(j);
            let (old_i, old_j) = (alpha[i], alpha[j]);
            let qij = f64::from(qi[j]);
            if y[i] != y[j] {
                let quad = qd + qd + 2.0 * qij;
                let quad = if quad > 0.0 { quad } else { TAU };
                let delta = (-g[i] - g[j]) / quad;
                let diff = alpha[i] - alpha[j];
                alpha[i] += delta;
                alpha[j] += delta;
                if diff > 0.0 {
                    if alpha[j] < 0.0 {
                        alpha[j] = 0.0;
                        alpha[i] = diff;
                    }
                } else if alpha[i] < 0.0 {
                    alpha[i] = 0.0;
                    alpha[j] = -diff;
                }
                // Both bounds are C here, so libsvm's `diff > C_i - C_j` is `diff > 0`.
                if diff > 0.0 {
                    if alpha[i] > c {
                        alpha[i] = c;
                        alpha[j] = c - diff;
                    }
                } else if alpha[j] > c {
                    alpha[j] = c;
                    alpha[i] = c + diff;
                }
            } else {
                let quad = qd + qd - 2.0 * qij;
                let quad = if quad > 0.0 { quad } else { TAU };
                let delta = (g[i] - g[j]) / quad;
                let sum = alpha[i] + alpha[j];
                alpha[i] -= delta;
                alpha[j] += delta;
                if sum > c {
                    if alpha[i] > c {
                        alpha[i] = c;
                        alpha[j] = sum - c;
                    }
                } else if alpha[j] < 0.0 {
                    alpha[j] = 0.0;
                    alpha[i] = sum;
                }
                if sum > c {
                    if alpha[j] > c {
                        alpha[j] = c;
                        alpha[i] = sum - c;
                    }
                } else if alpha[i] < 0.0 {
                    alpha[i] = 0.0;
                    alpha[j] = sum;
                }
            }
            let (di, dj) = (alpha[i] - old_i, alpha[j] - old_j);
            for t in 0..n {
                g[t] += f64::from(qi[t]) * di + f64::from(qj[t]) * dj;
            }
        }

        // libsvm's calculate_rho: the mean of y_i G_i over free variables, else the
        // middle of the feasible interval.
        let (mut ub, mut lb, mut sum_free, mut n_free) =
            (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for t in 0..n {
            let yg = y[t] * g[t];
            if upper(alpha[t]) {
                if y[t] < 0.0 {
                    ub = ub.min(yg);
                } else {
                    lb = lb.max(yg);
                }
            } else if lower(alpha[t]) {
                if y[t] > 0.0 {
                    ub = ub.min(yg);
                } else {
                    lb = lb.max(yg);
                }
            } else {
                n_free += 1;
                sum_free += yg;
            }
        }
        let rho = if n_free > 0 {
            sum_free / n_free as f64
        } else {
            (ub + lb) / 2.0
        };

        let mut support = Vec::new();
        let mut coef = Vec::new();
        for t in 0..n {
            if alpha[t] > 0.0 {
                support.extend_from_slice(x.row(t));
                coef.push(alpha[t] * y[t]);
            }
        }
        Ok(Svc {
            support: Features::new(support, x.dim())
                .map_err(|e| SvmError::Invalid(e.to_string()))?,
            coef,
            rho,
            gamma,
            iterations,
            hit_max_iter,
        })
    }

    /// Signed distance-like score per row of `x`; higher = more member-like.
    pub fn decision_function(&self, x: &Features) -> Vec<f64> {
        (0..x.len())
            .map(|r| {
                let xr = x.row(r);
                let s: f64 = self
                    .coef
                    .iter()
                    .enumerate()
                    .map(|(k, c)| c * rbf(self.support.row(k), xr, self.gamma))
                    .sum();
                s - self.rho
            })
            .collect()
    }

    /// Member predictions (`decision > 0`).
    pub fn predict(&self, x: &Features) -> Vec<bool> {
        self.decision_function(x).iter().map(|d| *d > 0.0).collect()
    }

    /// Number of support vectors.
    pub fn support_count(&self) -> usize {
        self.coef.len()
    }

    /// The bias term (`intercept_ = -rho` in scikit-learn).
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// The kernel width used.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
}
