//! Zero-shot multiple-choice tasks (METHODS.md §4.2): one file per task, listed once in
//! [`TASKS`], plus user tasks read from a jsonl file in either row format of [`jsonl`].
//!
//! A task turns its file into [`Example`]s; `eval::multiple_choice` scores them the way
//! lm-evaluation-harness 0.4 does.

pub mod arc_challenge;
pub mod arc_easy;
pub mod boolq;
pub mod hellaswag;
pub mod jsonl;
pub mod openbookqa;
pub mod piqa;
pub mod winogrande;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Which accuracy a task reports (METHODS.md §4.2, SLM's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `argmax loglik == gold`.
    Acc,
    /// The same with `loglik / len(choice)` in Unicode code points.
    AccNorm,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
        }
    }
}

/// One example. The texts are as the file holds them; `requests` adds lm-eval's delimiter.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// One context, one continuation per choice.
    Choices { context: String, choices: Vec<String>, gold: usize },
    /// One context per option and a shared continuation: WinoGrande's partial scoring.
    Contexts { contexts: Vec<String>, continuation: String, gold: usize },
}

/// lm-eval's `target_delimiter`: continuations start with one space.
pub const TARGET_DELIMITER: &str = " ";

impl Example {
    /// The `(context, continuation)` pairs to score, one per choice (lm-eval
    /// `ConfigurableTask.construct_requests`).
    pub fn requests(&self) -> Vec<(String, String)> {
        match self {
            Example::Choices { context, choices, .. } => choices
                .iter()
                .map(|c| (context.clone(), format!("{TARGET_DELIMITER}{c}")))
                .collect(),
            Example::Contexts { contexts, continuation, .. } => contexts
                .iter()
                .map(|c| (c.clone(), format!("{TARGET_DELIMITER}{continuation}")))
                .collect(),
        }
    }

    /// The choice texts (lm-eval `doc_to_choice`, without the delimiter), whose code points
    /// normalise `acc_norm`; WinoGrande's are its context options.
    pub fn choice_texts(&self) -> &[String] {
        match self {
            Example::Choices { choices, .. } => choices,
            Example::Contexts { contexts, .. } => contexts,
        }
    }

    pub fn gold(&self) -> usize {
        match self {
            Example::Choices { gold, .. } | Example::Contexts { gold, .. } => *gold,
        }
    }
}

/// A registered task.
pub struct TaskSpec {
    /// The name users give (`boolq`, `arc_easy`, …).
    pub id: &'static str,
    /// The file in the data folder.
    pub file: &'static str,
    /// What the file holds, for messages.
    pub format: &'static str,
    /// The metric METHODS.md §4.2 reports for it.
    pub metric: Metric,
    /// Reads every example of the file, in file order.
    pub read: fn(&Path) -> Result<Vec<Example>>,
}

/// Every standard task, in the order the papers' tables list them.
pub static TASKS: &[TaskSpec] = &[
    boolq::TASK,
    piqa::TASK,
    hellaswag::TASK,
    winogrande::TASK,
    arc_easy::TASK,
    arc_challenge::TASK,
    openbookqa::TASK,
];

/// A task to run: a registered one, or a user's jsonl file.
#[derive(Debug, Clone)]
pub struct Task {
    /// The registered id, or the file name as given.
    pub name: String,
    pub metric: Metric,
    pub path: PathBuf,
    read: fn(&Path) -> Result<Vec<Example>>,
}

impl Task {
    /// `name` is a registered id, or a path ending in `.jsonl` (a user task, scored by `acc`).
    /// Registered tasks read `<data_dir>/<file>`; a missing file or folder is an error naming it,
    /// where it was looked for and the format it must have.
    pub fn resolve(name: &str, data_dir: Option<&Path>) -> Result<Self> {
        if name.ends_with(".jsonl") {
            let path = PathBuf::from(name);
            require_file(
                &path,
                "task file",
                "the folder the name is relative to",
                jsonl::ANY_FORMAT,
            )?;
            return Ok(Self {
                name: name.into(),
                metric: Metric::Acc,
                path,
                read: jsonl::read_any,
            });
        }
        let spec = TASKS.iter().find(|t| t.id == name).ok_or_else(|| {
            let ids: Vec<_> = TASKS.iter().map(|t| t.id).collect();
            Error::config(
                "tasks",
                format!("`{name}` is not one of {} (or a .jsonl file of your own)", ids.join(", ")),
            )
        })?;
        let dir = data_dir.ok_or_else(|| {
            Error::config(
                "dataDir",
                format!("task `{name}` reads `{}` from the data folder: give dataDir", spec.file),
            )
        })?;
        let path = dir.join(spec.file);
        require_file(
            &path,
            "task file",
            &format!("the data folder `{}`", dir.display()),
            spec.format,
        )?;
        Ok(Self { name: name.into(), metric: spec.metric, path, read: spec.read })
    }

    /// Every example of the task, in file order.
    pub fn examples(&self) -> Result<Vec<Example>> {
        (self.read)(&self.path)
    }
}

fn require_file(path: &Path, what: &'static str, looked_in: &str, format: &str) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    if path.exists() {
        return Err(Error::config(
            "tasks",
            format!("`{}` is a folder, not a {what}", path.display()),
        ));
    }
    Err(Error::NotFound {
        what,
        path: path.to_path_buf(),
        hint: format!("looked for it in {looked_in}; it must hold {format}"),
    })
}

/// `Error::Data` naming a line of a task file.
pub(crate) fn bad_line(path: &Path, line: usize, problem: impl std::fmt::Display) -> Error {
    Error::Data { message: format!("`{}` line {line}: {problem}", path.display()) }
}
