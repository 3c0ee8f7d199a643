//! HellaSwag (Zellers et al. 2019, validation split) from `hellaswag_val.txt.bz2`: bzip2 text of
//! 6 lines per example, `"{activity_label}: {context}"` (the context), the gold index (0–3), then
//! the 4 endings (the choices). Reports `acc_norm` (METHODS.md §4.2).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::tasks::{bad_line, Example, Metric, TaskSpec};

pub const TASK: TaskSpec = TaskSpec {
    id: "hellaswag",
    file: "hellaswag_val.txt.bz2",
    format: "bzip2 text of 6 lines per example: the context, the gold index 0-3, then 4 endings",
    metric: Metric::AccNorm,
    read,
};

const LINES_PER_EXAMPLE: usize = 6;
const ENDINGS: usize = 4;

fn read(path: &Path) -> Result<Vec<Example>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    bzip2::read::BzDecoder::new(file).read_to_string(&mut text).map_err(|e| Error::Data {
        message: format!("`{}` is not bzip2-compressed UTF-8 text: {e}", path.display()),
    })?;
    parse(&text, path)
}

/// The examples of the decompressed text; a trailing newline is allowed, a partial example is not.
fn parse(text: &str, path: &Path) -> Result<Vec<Example>> {
    let lines: Vec<&str> = text.strip_suffix('\n').unwrap_or(text).split('\n').collect();
    if text.trim().is_empty() {
        return Err(Error::Data { message: format!("`{}` holds no example", path.display()) });
    }
    if !lines.len().is_multiple_of(LINES_PER_EXAMPLE) {
        return Err(bad_line(
            path,
            lines.len() - lines.len() % LINES_PER_EXAMPLE + 1,
            format!(
                "{} lines, not a multiple of {LINES_PER_EXAMPLE}: the last example is incomplete",
                lines.len()
            ),
        ));
    }
    lines
        .chunks(LINES_PER_EXAMPLE)
        .enumerate()
        .map(|(k, group)| {
            let first = k * LINES_PER_EXAMPLE + 1;
            let gold: usize = group[1].trim().parse().map_err(|_| {
                bad_line(path, first + 1, format!("`{}` is not a gold index", group[1]))
            })?;
            if gold >= ENDINGS {
                return Err(bad_line(
                    path,
                    first + 1,
                    format!("gold index {gold} is outside 0..{ENDINGS}"),
                ));
            }
            Ok(Example::Choices {
                context: group[0].to_string(),
                choices: group[2..].iter().map(|s| s.to_string()).collect(),
                gold,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_lines_per_example() {
        let text = "Act: a man\n2\nx\ny\nz\nw\nB: c\n0\n1\n2\n3\n4\n";
        let ex = parse(text, Path::new("h")).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0],
            Example::Choices {
                context: "Act: a man".into(),
                choices: vec!["x".into(), "y".into(), "z".into(), "w".into()],
                gold: 2
            }
        );
        let e = parse("A\n7\n1\n2\n3\n4\n", Path::new("h")).unwrap_err();
        assert!(e.to_string().contains("line 2: gold index 7"), "{e}");
        let e = parse("A\n1\n1\n2\n", Path::new("h")).unwrap_err();
        assert!(e.to_string().contains("incomplete"), "{e}");
    }
}
