//! Where each layer of a pruned model came from: the merge record (METHODS.md §3). A layer is an
//! original layer (0-based index in the model as loaded) or a merge of layers; progressive methods
//! nest merges, so the record is a tree. Serialised as `5` or `[3, 4]` or `[[3, 4], 5]`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub enum Origin {
    Layer(usize),
    Merged(Vec<Origin>),
}

impl Origin {
    /// The original layers under this node, in order.
    pub fn layers(&self) -> Vec<usize> {
        match self {
            Origin::Layer(i) => vec![*i],
            Origin::Merged(children) => children.iter().flat_map(Origin::layers).collect(),
        }
    }

    /// A merge of `parts` (a single part stays as it is).
    pub fn merge(parts: Vec<Origin>) -> Origin {
        if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Origin::Merged(parts)
        }
    }

    pub fn is_merged(&self) -> bool {
        matches!(self, Origin::Merged(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_nested_arrays() {
        let o = Origin::merge(vec![
            Origin::merge(vec![Origin::Layer(3), Origin::Layer(4)]),
            Origin::Layer(5),
        ]);
        assert_eq!(serde_json::to_string(&o).unwrap(), "[[3,4],5]");
        assert_eq!(o.layers(), vec![3, 4, 5]);
        assert_eq!(Origin::merge(vec![Origin::Layer(7)]), Origin::Layer(7));
        assert_eq!(serde_json::from_str::<Origin>("[[3,4],5]").unwrap(), o);
    }
}
