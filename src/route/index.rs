//! Which routes can match a path, without trying every route: a trie over the leading
//! literal segments of the templates. A route whose template starts with `/api/people/`
//! sits under `api` → `people`; a lookup walks the path's segments down the trie and
//! tries, in file order, only the routes on that walk. Routing cost then grows with the
//! path's depth and the routes that share its prefix, not with the size of the table.
//!
//! Invariant: the routes on a path's walk include every route whose template matches
//! the path (a match starts with the template's literal prefix, and that prefix ends at
//! a segment boundary: a segment holding `{` or `}` ends it).

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct Index {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Positions in file order (ascending) of the routes whose literal prefix ends here.
    routes: Vec<usize>,
    children: HashMap<Box<str>, Node>,
}

impl Index {
    /// Adds the route at `position`; positions must be added in ascending order.
    pub(super) fn insert(&mut self, template: &str, position: usize) {
        let mut node = &mut self.root;
        let literal = template
            .split('/')
            .skip(1)
            .take_while(|segment| !segment.contains(['{', '}']));
        for segment in literal {
            node = node.children.entry(segment.into()).or_default();
        }
        node.routes.push(position);
    }

    /// The lowest position on `path`'s walk for which `matches` holds.
    pub(super) fn first(&self, path: &str, matches: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut segments = path.split('/').skip(1);
        let mut node = Some(&self.root);
        while let Some(here) = node {
            let earlier = here.routes.iter().take_while(|&&p| best.is_none_or(|b| p < b));
            if let Some(&found) = earlier.into_iter().find(|&&p| matches(p)) {
                best = Some(found);
            }
            node = segments.next().and_then(|segment| here.children.get(segment));
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions on the walk, by a predicate that accepts all of them.
    fn walk(index: &Index, path: &str) -> Vec<usize> {
        let seen = std::cell::RefCell::new(Vec::new());
        index.first(path, |p| {
            seen.borrow_mut().push(p);
            false
        });
        let mut seen = seen.into_inner();
        seen.sort_unstable();
        seen
    }

    fn index(templates: &[&str]) -> Index {
        let mut index = Index::default();
        for (position, template) in templates.iter().enumerate() {
            index.insert(template, position);
        }
        index
    }

    #[test]
    fn a_walk_holds_the_routes_whose_literal_prefix_the_path_starts_with() {
        let index = index(&[
            "/api/people/{id}",
            "/api/orders/{id}",
            "/api/{kind}/{id}",
            "/{*rest}",
            "/api/people/report-{id}",
            "/api/people",
        ]);
        assert_eq!(walk(&index, "/api/people/1"), [0, 2, 3, 4, 5]);
        assert_eq!(walk(&index, "/api/orders/1"), [1, 2, 3]);
        assert_eq!(walk(&index, "/other"), [3]);
        assert_eq!(walk(&index, "/api//people/1"), [2, 3]);
        assert_eq!(walk(&index, "*"), [3]);
    }

    #[test]
    fn the_first_match_in_file_order_wins_across_levels() {
        let index = index(&["/{*rest}", "/api/people/{id}"]);
        assert_eq!(index.first("/api/people/1", |_| true), Some(0));
        assert_eq!(index.first("/api/people/1", |p| p == 1), Some(1));
        assert_eq!(index.first("/api/people/1", |_| false), None);
    }

    proptest::proptest! {
        /// The walk finds what trying every template in file order finds.
        #[test]
        fn the_index_agrees_with_trying_every_route(
            templates in proptest::collection::vec(template(), 1..12),
            path in proptest::collection::vec(proptest::sample::select(&["a", "b", "c", "", "x-1"][..]), 0..5),
        ) {
            let path = format!("/{}", path.join("/"));
            let mut index = Index::default();
            let mut routers = Vec::new();
            for template in &templates {
                let mut router = matchit::Router::new();
                if router.insert(template.as_str(), ()).is_ok() {
                    index.insert(template, routers.len());
                    routers.push(router);
                }
            }
            let linear = routers.iter().position(|r| r.at(&path).is_ok());
            proptest::prop_assert_eq!(index.first(&path, |p| routers[p].at(&path).is_ok()), linear);
        }
    }

    fn template() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let segment = proptest::sample::select(&["a", "b", "c", "{p}", "x-{q}", "{s}.json"][..]);
        (proptest::collection::vec(segment, 0..4), any::<bool>()).prop_map(|(segments, rest)| {
            let mut template = format!("/{}", segments.join("/"));
            if rest {
                template.push_str(if segments.is_empty() { "{*r}" } else { "/{*r}" });
            }
            template
        })
    }
}
