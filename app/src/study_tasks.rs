//! The runs of a study on an executor (several at once on this machine, or
//! Slurm array tasks), followed from the `study: ` lines `lethe study
//! --verbose` prints on stderr (engine `study::runner::run_units`):
//!
//! ```text
//! study: 4 run(s) on Slurm (partition debug) (unit files in /p/studies/s/executor)
//! study: submitted as Slurm job 812 (attempt 1): Retrain, seed 0; FT, seed 0
//! study: Retrain, seed 0: started                      (this machine)
//! study: following tasks an earlier run left in the queue: FT, seed 1
//! study: Retrain, seed 0: running on node07
//! study: Retrain, seed 0: finished in 12.3 s on node07
//! study: FAILED, submitting it again: FT, seed 0 (attempt 1 of 3): why (log: /p/…/1.log)
//! study: FAILED: FT, seed 0 (attempt 3 of 3): why (log: /p/…/1.log)
//! study: FAILED: FT, seed 0: why (log: /p/…/1.log)     (this machine)
//! ```
//!
//! A failure's reason may span lines (the last lines of the task's log, which
//! may themselves start with `study:`); it ends with the line that ends in
//! `(log: PATH)`.

/// A run's name as the study prints it (`FT, seed 1`), if `s` is one.
fn unit_name(s: &str) -> Option<&str> {
    let (row, seed) = s.rsplit_once(", seed ")?;
    (!row.is_empty() && !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// `A, seed 0; B, seed 1` as its run names.
fn unit_list(s: &str) -> Option<Vec<String>> {
    s.split("; ")
        .map(|u| unit_name(u.trim()).map(str::to_string))
        .collect()
}

/// One executor line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskLine {
    /// `N run(s) on <executor> (unit files in <dir>)`.
    Header {
        /// Runs the executor was given.
        runs: usize,
        /// Where, in words ("this machine, 2 at a time", "Slurm (partition debug)").
        executor: String,
        /// The folder of the runs' spec, result and log files.
        dir: String,
    },
    /// Runs went to Slurm as one job array.
    Submitted {
        /// Slurm job id.
        job: String,
        /// Which submission of these runs this is (1 = the first).
        attempt: u32,
        /// The runs.
        units: Vec<String>,
    },
    /// Runs started on this machine.
    Started(Vec<String>),
    /// Runs an earlier `lethe study` left in the Slurm queue, followed now.
    Reattached(Vec<String>),
    /// A run is running on a node.
    Running {
        /// The run.
        unit: String,
        /// The node.
        host: String,
    },
    /// A run finished.
    Finished {
        /// The run.
        unit: String,
        /// Its wall time.
        seconds: f64,
        /// Where it ran.
        host: String,
    },
    /// A run failed (its reason may go on over the next lines when `log` is
    /// `None`).
    Failed {
        /// The run.
        unit: String,
        /// `(i, n)`: attempt i of n (Slurm).
        attempt: Option<(u32, u32)>,
        /// It is submitted again.
        retry: bool,
        /// Why (as far as this line goes).
        why: String,
        /// The run's log file, once known.
        log: Option<String>,
    },
}

/// `text (log: PATH)` as `(text, PATH)`.
fn split_log(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_suffix(')')?;
    let at = body.rfind(" (log: ").map(|i| (i, 7)).or_else(|| {
        // A line of a multi-line reason that holds only the path.
        body.starts_with("(log: ").then_some((0, 6))
    })?;
    Some((&body[..at.0], &body[at.0 + at.1..]))
}

/// The executor line `line` is, if any (other lines: `None`).
pub fn parse_line(line: &str) -> Option<TaskLine> {
    let rest = line.strip_prefix("study: ")?;
    if let Some(r) = rest.strip_prefix("FAILED, submitting it again: ") {
        return failed(r, true);
    }
    if let Some(r) = rest.strip_prefix("FAILED: ") {
        return failed(r, false);
    }
    if let Some(r) = rest.strip_prefix("submitted as Slurm job ") {
        let (head, units) = r.split_once("): ")?;
        let (job, attempt) = head.split_once(" (attempt ")?;
        return Some(TaskLine::Submitted {
            job: job.to_string(),
            attempt: attempt.parse().ok()?,
            units: unit_list(units)?,
        });
    }
    if let Some(r) = rest.strip_prefix("following tasks an earlier run left in the queue: ") {
        return Some(TaskLine::Reattached(unit_list(r)?));
    }
    if let Some((head, tail)) = rest.split_once(" run(s) on ")
        && let Ok(runs) = head.parse::<usize>()
    {
        let (executor, dir) = tail.strip_suffix(')')?.rsplit_once(" (unit files in ")?;
        return Some(TaskLine::Header {
            runs,
            executor: executor.to_string(),
            dir: dir.to_string(),
        });
    }
    if let Some(units) = rest.strip_suffix(": started") {
        return Some(TaskLine::Started(unit_list(units)?));
    }
    let (unit, what) = rest.split_once(": ")?;
    let unit = unit_name(unit)?.to_string();
    if let Some(host) = what.strip_prefix("running on ") {
        return Some(TaskLine::Running {
            unit,
            host: host.to_string(),
        });
    }
    if let Some(r) = what.strip_prefix("finished in ") {
        let (secs, host) = r.split_once(" s on ")?;
        return Some(TaskLine::Finished {
            unit,
            seconds: secs.parse().ok()?,
            host: host.to_string(),
        });
    }
    None
}

/// `<unit> (attempt i of n): why (log: P)` or `<unit>: why (log: P)`.
fn failed(r: &str, retry: bool) -> Option<TaskLine> {
    // The run's name ends at its seed's last digit.
    let at = r.find(", seed ")? + ", seed ".len();
    let digits = r[at..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let unit = &r[..at + digits];
    let after = &r[at + digits..];
    let (attempt, message) = if let Some(a) = after.strip_prefix(" (attempt ") {
        let (nums, message) = a.split_once("): ")?;
        let (i, n) = nums.split_once(" of ")?;
        (Some((i.parse().ok()?, n.parse().ok()?)), message)
    } else {
        (None, after.strip_prefix(": ")?)
    };
    let (why, log) = match split_log(message) {
        Some((why, log)) => (why.to_string(), Some(log.to_string())),
        None => (message.to_string(), None),
    };
    Some(TaskLine::Failed {
        unit: unit.to_string(),
        attempt,
        retry,
        why,
        log,
    })
}

/// Where one run is.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Submitted to Slurm, not running yet.
    Submitted {
        /// Slurm job id.
        job: String,
        /// Which submission (1 = the first).
        attempt: u32,
    },
    /// Started on this machine.
    Started,
    /// Left in the queue by an earlier run, followed now.
    Reattached,
    /// Running on a node.
    Running(String),
    /// Finished.
    Finished {
        /// Wall time.
        seconds: f64,
        /// Where.
        host: String,
    },
    /// Failed; `retry`: submitted again.
    Failed {
        /// `(i, n)`: attempt i of n (Slurm).
        attempt: Option<(u32, u32)>,
        /// It is submitted again.
        retry: bool,
        /// Why (possibly several lines).
        why: String,
        /// Its log file.
        log: Option<String>,
    },
}

/// A run and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// `FT, seed 1`.
    pub unit: String,
    /// Where it is.
    pub state: TaskState,
}

impl Task {
    /// The state in words, for the task list.
    pub fn describe(&self) -> String {
        match &self.state {
            TaskState::Submitted { job, attempt: 1 } => {
                format!("submitted as job {job}, waiting for a node")
            }
            TaskState::Submitted { job, attempt } => {
                format!("submitted again as job {job} (attempt {attempt}), waiting for a node")
            }
            TaskState::Started => "running on this machine".into(),
            TaskState::Reattached => "in the queue since an earlier run, waiting".into(),
            TaskState::Running(host) => format!("running on {host}"),
            TaskState::Finished { seconds, host } => {
                format!("finished in {seconds:.1} s on {host}")
            }
            TaskState::Failed {
                attempt,
                retry: true,
                ..
            } => match attempt {
                Some((i, n)) => format!("failed, retrying (attempt {i} of {n} failed)"),
                None => "failed, retrying".into(),
            },
            TaskState::Failed {
                attempt: Some((i, n)),
                ..
            } => format!("failed (attempt {i} of {n})"),
            TaskState::Failed { .. } => "failed".into(),
        }
    }

    /// Whether the run is over (finished, or failed for good).
    pub fn is_over(&self) -> bool {
        matches!(
            self.state,
            TaskState::Finished { .. } | TaskState::Failed { retry: false, .. }
        )
    }
}

/// Lines of a failure's reason kept at most (the engine prints up to 8 lines
/// of the task's log); a reason that never names its log ends there.
const MAX_REASON_LINES: usize = 16;

/// The runs of the latest executor stage of a study, from its lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskBoard {
    /// Runs the executor was given (0: no executor stage seen: the study runs
    /// one run after another in its own process, or has not got that far).
    pub runs: usize,
    /// Where, in words.
    pub executor: String,
    /// The folder of the runs' files (their logs are there).
    pub dir: String,
    /// The runs seen so far, in the order they first appeared.
    pub tasks: Vec<Task>,
    /// A failure whose reason goes on: the task, and lines taken.
    pending: Option<(usize, usize)>,
}

impl TaskBoard {
    /// Whether an executor stage was seen.
    pub fn active(&self) -> bool {
        self.runs > 0
    }

    /// Runs not seen yet (waiting for a free place on this machine).
    pub fn unseen(&self) -> usize {
        self.runs.saturating_sub(self.tasks.len())
    }

    /// Counts: running (or started), waiting (queued or unseen), finished,
    /// failed for good.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let (mut running, mut waiting, mut finished, mut failed) = (0, self.unseen(), 0, 0);
        for t in &self.tasks {
            match &t.state {
                TaskState::Started | TaskState::Running(_) => running += 1,
                TaskState::Submitted { .. }
                | TaskState::Reattached
                | TaskState::Failed { retry: true, .. } => waiting += 1,
                TaskState::Finished { .. } => finished += 1,
                TaskState::Failed { .. } => failed += 1,
            }
        }
        (running, waiting, finished, failed)
    }

    fn task(&mut self, unit: &str) -> &mut Task {
        let i = match self.tasks.iter().position(|t| t.unit == unit) {
            Some(i) => i,
            None => {
                self.tasks.push(Task {
                    unit: unit.to_string(),
                    state: TaskState::Reattached,
                });
                self.tasks.len() - 1
            }
        };
        &mut self.tasks[i]
    }

    fn set(&mut self, unit: &str, state: TaskState) {
        self.task(unit).state = state;
    }

    /// Notes a line of the study process.
    pub fn observe(&mut self, line: &str) {
        if let Some((i, taken)) = self.pending {
            // The failure's reason goes on, up to the line naming its log.
            let end = split_log(line);
            if let Some(TaskState::Failed { why, log, .. }) =
                self.tasks.get_mut(i).map(|t| &mut t.state)
            {
                why.push('\n');
                match end {
                    Some((text, path)) => {
                        why.push_str(text);
                        *log = Some(path.to_string());
                    }
                    None => why.push_str(line),
                }
            }
            self.pending =
                (end.is_none() && taken + 1 < MAX_REASON_LINES).then_some((i, taken + 1));
            return;
        }
        // A new `lethe study` process: its opening line (`study NAME: …`).
        if line.starts_with("study ") {
            *self = TaskBoard::default();
            return;
        }
        let Some(parsed) = parse_line(line) else {
            return;
        };
        if let TaskLine::Header {
            runs,
            executor,
            dir,
        } = parsed
        {
            *self = TaskBoard {
                runs,
                executor,
                dir,
                ..TaskBoard::default()
            };
            return;
        }
        if !self.active() {
            // The same words from a study running in its own process.
            return;
        }
        match parsed {
            TaskLine::Header { .. } => {}
            TaskLine::Submitted {
                job,
                attempt,
                units,
            } => {
                for u in units {
                    self.set(
                        &u,
                        TaskState::Submitted {
                            job: job.clone(),
                            attempt,
                        },
                    );
                }
            }
            TaskLine::Started(units) => {
                for u in units {
                    self.set(&u, TaskState::Started);
                }
            }
            TaskLine::Reattached(units) => {
                for u in units {
                    self.set(&u, TaskState::Reattached);
                }
            }
            TaskLine::Running { unit, host } => self.set(&unit, TaskState::Running(host)),
            TaskLine::Finished {
                unit,
                seconds,
                host,
            } => self.set(&unit, TaskState::Finished { seconds, host }),
            TaskLine::Failed {
                unit,
                attempt,
                retry,
                why,
                log,
            } => {
                let open = log.is_none();
                self.set(
                    &unit,
                    TaskState::Failed {
                        attempt,
                        retry,
                        why,
                        log,
                    },
                );
                if open {
                    let i = self.tasks.iter().position(|t| t.unit == unit);
                    self.pending = i.map(|i| (i, 0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(lines: &[&str]) -> TaskBoard {
        let mut b = TaskBoard::default();
        for l in lines {
            b.observe(l);
        }
        b
    }

    fn states(b: &TaskBoard) -> Vec<(String, String)> {
        b.tasks
            .iter()
            .map(|t| (t.unit.clone(), t.describe()))
            .collect()
    }

    #[test]
    fn every_line_format_parses() {
        assert_eq!(
            parse_line(
                "study: 4 run(s) on Slurm (partition debug) (unit files in /p/s (1)/executor)"
            ),
            Some(TaskLine::Header {
                runs: 4,
                executor: "Slurm (partition debug)".into(),
                dir: "/p/s (1)/executor".into()
            })
        );
        assert_eq!(
            parse_line("study: 2 run(s) on this machine, 2 at a time (unit files in /x/executor)"),
            Some(TaskLine::Header {
                runs: 2,
                executor: "this machine, 2 at a time".into(),
                dir: "/x/executor".into()
            })
        );
        assert_eq!(
            parse_line(
                "study: submitted as Slurm job 812 (attempt 2): Retrain, seed 0; FT, seed 1"
            ),
            Some(TaskLine::Submitted {
                job: "812".into(),
                attempt: 2,
                units: vec!["Retrain, seed 0".into(), "FT, seed 1".into()]
            })
        );
        assert_eq!(
            parse_line("study: FT, seed 1: started"),
            Some(TaskLine::Started(vec!["FT, seed 1".into()]))
        );
        assert_eq!(
            parse_line(
                "study: following tasks an earlier run left in the queue: FT, seed 0; GA, seed 2"
            ),
            Some(TaskLine::Reattached(vec![
                "FT, seed 0".into(),
                "GA, seed 2".into()
            ]))
        );
        assert_eq!(
            parse_line("study: Retrain, seed 0: running on node07"),
            Some(TaskLine::Running {
                unit: "Retrain, seed 0".into(),
                host: "node07".into()
            })
        );
        assert_eq!(
            parse_line("study: NegGrad+, seed 12: finished in 63.0 s on node-a.cluster"),
            Some(TaskLine::Finished {
                unit: "NegGrad+, seed 12".into(),
                seconds: 63.0,
                host: "node-a.cluster".into()
            })
        );
        assert_eq!(
            parse_line(
                "study: FAILED, submitting it again: FT, seed 1 (attempt 1 of 3): the task left the queue without a result (killed, cancelled or its node failed) (log: /s/executor/1.log)"
            ),
            Some(TaskLine::Failed {
                unit: "FT, seed 1".into(),
                attempt: Some((1, 3)),
                retry: true,
                why: "the task left the queue without a result (killed, cancelled or its node failed)".into(),
                log: Some("/s/executor/1.log".into())
            })
        );
        assert_eq!(
            parse_line(
                "study: FAILED: FT, seed 1 (attempt 3 of 3): FT, seed 1: the plugin said no (log: /s/executor/1.log)"
            ),
            Some(TaskLine::Failed {
                unit: "FT, seed 1".into(),
                attempt: Some((3, 3)),
                retry: false,
                why: "FT, seed 1: the plugin said no".into(),
                log: Some("/s/executor/1.log".into())
            })
        );
        assert_eq!(
            parse_line("study: FAILED: GA, seed 0: out of memory (log: /s/executor/2.log)"),
            Some(TaskLine::Failed {
                unit: "GA, seed 0".into(),
                attempt: None,
                retry: false,
                why: "out of memory".into(),
                log: Some("/s/executor/2.log".into())
            })
        );
        // The study's other lines are not executor lines.
        for other in [
            "study demo: 2 method(s) × 2 seed(s) into /p/studies/demo",
            "study: study demo: finding plugins",
            "study: FT, seed 0: finished earlier, reused (runs/ft-s0)",
            "study: FT, seed 0: evaluating",
            "study: FT, seed 0: FAILED: no such plugin",
            "study: 4 run(s) done, 1 reused from the folder; retrain: 1 trained, 0 from the cache",
            "  [FT, seed 0] [ 45%] epoch 1/2",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }

    #[test]
    fn a_slurm_study_is_followed_run_by_run() {
        let b = board(&[
            "study demo: 2 method(s) × 1 seed(s) into /p/studies/demo",
            "study: study demo: finding plugins",
            "study: Retrain, seed 0: finished earlier, reused (runs/retrain-s0)",
            "study: 3 run(s) on Slurm (partition debug) (unit files in /p/studies/demo/executor)",
            "study: following tasks an earlier run left in the queue: GA, seed 0",
            "study: submitted as Slurm job 812 (attempt 1): FT, seed 0; NG, seed 0",
            "study: FT, seed 0: running on node07",
            "study: GA, seed 0: running on node08",
            "study: FT, seed 0: finished in 12.34 s on node07",
            "study: FAILED, submitting it again: NG, seed 0 (attempt 1 of 2): the task left the queue without a result (killed, cancelled or its node failed) (log: /p/studies/demo/executor/2.log)",
        ]);
        assert!(b.active());
        assert_eq!(b.executor, "Slurm (partition debug)");
        assert_eq!(
            states(&b),
            [
                ("GA, seed 0".into(), "running on node08".into()),
                ("FT, seed 0".into(), "finished in 12.3 s on node07".into()),
                (
                    "NG, seed 0".into(),
                    "failed, retrying (attempt 1 of 2 failed)".into()
                ),
            ]
        );
        assert_eq!(b.counts(), (1, 1, 1, 0));
        let mut b = b;
        b.observe("study: submitted as Slurm job 815 (attempt 2): NG, seed 0");
        assert_eq!(
            b.tasks[2].describe(),
            "submitted again as job 815 (attempt 2), waiting for a node"
        );
        // The reason of a failure spans lines: the last lines of the task's
        // log, some of them the unit's own `study:` lines.
        for l in [
            "study: FAILED: NG, seed 0 (attempt 2 of 2): the task left the queue without a result; last lines of its log:",
            "lethe run-job on node08: study demo: NG, seed 0 (/p/studies/demo/executor/2.json)",
            "study: NG, seed 0: unlearning with org.lethe.baseline.neggrad",
            "slurmstepd: error: *** JOB 815 ON node08 CANCELLED DUE TO TIME LIMIT *** (log: /p/studies/demo/executor/2.log)",
            "study: 1 run(s) done, 1 reused from the folder; retrain: 0 trained, 0 from the cache",
        ] {
            b.observe(l);
        }
        let TaskState::Failed {
            attempt,
            retry,
            why,
            log,
        } = &b.tasks[2].state
        else {
            panic!("{:?}", b.tasks[2]);
        };
        assert_eq!((*attempt, *retry), (Some((2, 2)), false));
        assert_eq!(log.as_deref(), Some("/p/studies/demo/executor/2.log"));
        assert!(why.starts_with("the task left the queue"), "{why}");
        assert!(why.ends_with("CANCELLED DUE TO TIME LIMIT ***"), "{why}");
        assert_eq!(why.lines().count(), 4, "{why}");
        assert_eq!(b.tasks[2].describe(), "failed (attempt 2 of 2)");
        assert_eq!(b.counts(), (1, 0, 1, 1));
        // The next process starts over.
        b.observe("study demo: 2 method(s) × 1 seed(s) into /p/studies/demo");
        assert!(!b.active() && b.tasks.is_empty());
    }

    #[test]
    fn local_runs_show_as_they_start_and_the_rest_wait() {
        let mut b = board(&[
            "study demo: 1 method(s) × 2 seed(s) into /p/studies/demo",
            "study: 4 run(s) on this machine, 2 at a time (unit files in /p/studies/demo/executor)",
            "study: Retrain, seed 0: started",
            "study: FT, seed 0: started",
        ]);
        assert_eq!(b.unseen(), 2);
        assert_eq!(b.counts(), (2, 2, 0, 0));
        b.observe("study: FT, seed 0: finished in 3.0 s on laptop");
        b.observe("study: Retrain, seed 1: started");
        b.observe("study: FAILED: Retrain, seed 0: it ended (exit status: 1) without a result; last lines of its log:");
        b.observe("error: boom");
        assert_eq!(b.counts(), (1, 1, 1, 1));
        let log = |b: &TaskBoard| match &b.tasks[0].state {
            TaskState::Failed { log, why, .. } => (log.clone(), why.clone()),
            s => panic!("{s:?}"),
        };
        assert_eq!(log(&b).0, None, "the failure's reason is still open");
        b.observe("at the end (log: /p/studies/demo/executor/0.log)");
        assert_eq!(
            log(&b),
            (
                Some("/p/studies/demo/executor/0.log".into()),
                "it ended (exit status: 1) without a result; last lines of its log:\nerror: boom\nat the end".into()
            )
        );
        assert_eq!(b.tasks[2].describe(), "running on this machine");
        b.observe("study: Retrain, seed 1: finished in 4.0 s on laptop");
        assert_eq!(
            b.counts(),
            (0, 1, 2, 1),
            "lines after the reason count again"
        );
        assert_eq!(b.tasks[0].describe(), "failed");
        assert_eq!(b.tasks[2].describe(), "finished in 4.0 s on laptop");
        // A study that runs in its own process shows no tasks.
        let b = board(&[
            "study demo: 1 method(s) × 1 seed(s) into /p/studies/demo",
            "study: Retrain, seed 0: finished in 3.0 s on laptop",
        ]);
        assert!(!b.active() && b.tasks.is_empty());
    }
}
