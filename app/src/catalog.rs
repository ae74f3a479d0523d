//! The plugins a worker scan found: methods and attacks to choose from, and the
//! libraries that were refused with the reason. The GUI never loads a plugin
//! itself; this is built from the scan report only.

use lethe_engine::worker::DirScan;
use lethe_engine::worker::protocol::DescriptorInfo;
use std::path::PathBuf;

/// One method or attack on offer.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// The library that offers it.
    pub library: PathBuf,
    /// Its descriptor (id, name, kind, schema…).
    pub info: DescriptorInfo,
}

/// A library that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The file (or folder, when the folder could not be read).
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Everything found.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The folders searched.
    pub dirs: Vec<PathBuf>,
    /// Usable descriptors, in search order; an id offered twice is listed once
    /// (the first wins, as with `lethe unlearn`).
    pub entries: Vec<PluginEntry>,
    /// Refused libraries.
    pub refused: Vec<Refused>,
}

impl Catalog {
    /// Builds the catalog from a scan.
    pub fn from_scan(dirs: Vec<PathBuf>, scans: Vec<DirScan>) -> Self {
        let mut cat = Catalog {
            dirs,
            ..Catalog::default()
        };
        for scan in scans {
            match scan.files {
                Err(reason) => cat.refused.push(Refused {
                    path: scan.dir,
                    reason,
                }),
                Ok(files) => {
                    for file in files {
                        match file.outcome {
                            Ok(descriptors) => {
                                for info in descriptors {
                                    if !cat.entries.iter().any(|e| e.info.id == info.id) {
                                        cat.entries.push(PluginEntry {
                                            library: file.path.clone(),
                                            info,
                                        });
                                    }
                                }
                            }
                            Err(reason) => cat.refused.push(Refused {
                                path: file.path,
                                reason,
                            }),
                        }
                    }
                }
            }
        }
        cat
    }

    /// Descriptors of one kind (`method` or `attack`).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a PluginEntry> + 'a {
        self.entries.iter().filter(move |e| e.info.kind == kind)
    }

    /// The entry with `id`.
    pub fn get(&self, id: &str) -> Option<&PluginEntry> {
        self.entries.iter().find(|e| e.info.id == id)
    }

    /// The method to preselect for someone who has not chosen: exact retraining
    /// when present (the reference every other method is measured against).
    pub fn default_method(&self) -> Option<&PluginEntry> {
        self.get("org.lethe.baseline.retrain")
            .or_else(|| self.get("org.lethe.baseline.finetune"))
            .or_else(|| self.of_kind("method").next())
    }
}

/// Whether a plugin id belongs to the test fixtures (shown last, marked as such).
pub fn is_test_plugin(id: &str) -> bool {
    id.starts_with("org.lethe.test.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_engine::worker::ScannedFile;
    use lethe_plugin_api::schema::Schema;

    fn info(id: &str, kind: &str) -> DescriptorInfo {
        DescriptorInfo {
            id: id.into(),
            name: id.into(),
            version: "1".into(),
            kind: kind.into(),
            description: String::new(),
            citation: String::new(),
            schema: Schema::default(),
        }
    }

    #[test]
    fn scan_becomes_entries_and_refusals() {
        let scans = vec![
            DirScan {
                dir: "/a".into(),
                files: Ok(vec![
                    ScannedFile {
                        path: "/a/libx.so".into(),
                        outcome: Ok(vec![
                            info("org.x.ft", "method"),
                            info("org.x.mia", "attack"),
                        ]),
                    },
                    ScannedFile {
                        path: "/a/libbad.so".into(),
                        outcome: Err("ABI 2.0".into()),
                    },
                ]),
            },
            DirScan {
                dir: "/b".into(),
                files: Ok(vec![ScannedFile {
                    path: "/b/libx.so".into(),
                    outcome: Ok(vec![info("org.x.ft", "method")]),
                }]),
            },
            DirScan {
                dir: "/c".into(),
                files: Err("permission denied".into()),
            },
        ];
        let cat = Catalog::from_scan(vec!["/a".into(), "/b".into()], scans);
        assert_eq!(cat.entries.len(), 2, "duplicate id listed once");
        assert_eq!(
            cat.get("org.x.ft").unwrap().library,
            PathBuf::from("/a/libx.so")
        );
        assert_eq!(cat.of_kind("attack").count(), 1);
        assert_eq!(cat.refused.len(), 2);
        assert_eq!(cat.refused[0].reason, "ABI 2.0");
        assert_eq!(cat.refused[1].path, PathBuf::from("/c"));
        assert_eq!(cat.default_method().unwrap().info.id, "org.x.ft");
    }
}
