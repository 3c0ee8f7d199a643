//! ARC-Easy (Clark et al. 2018, test split): `arc_easy.jsonl` of `{query, choices, gold}` rows, the query used as the context
//! as it is. Reports `acc` (METHODS.md §4.2).

use crate::eval::tasks::{jsonl, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "arc_easy",
    file: "arc_easy.jsonl",
    format: jsonl::CHOICES_FORMAT,
    metric: Metric::Acc,
    read: jsonl::read_choices,
};
