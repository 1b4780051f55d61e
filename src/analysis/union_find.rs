//! Union-find over channel elements, with a "frozen" reason that survives unions: an element
//! coupled to anything that cannot be removed cannot be removed either.

pub(crate) struct UnionFind {
    parent: Vec<usize>,
    frozen: Vec<Option<String>>,
}

impl UnionFind {
    pub fn new() -> Self {
        UnionFind {
            parent: Vec::new(),
            frozen: Vec::new(),
        }
    }

    pub fn add(&mut self) -> usize {
        self.parent.push(self.parent.len());
        self.frozen.push(None);
        self.parent.len() - 1
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        // The smaller id stays the root: classes are named after their first element.
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child] = root;
        if self.frozen[root].is_none() {
            self.frozen[root] = self.frozen[child].take();
        }
    }

    pub fn freeze(&mut self, x: usize, reason: &str) {
        let r = self.find(x);
        if self.frozen[r].is_none() {
            self.frozen[r] = Some(reason.to_string());
        }
    }

    pub fn frozen(&mut self, x: usize) -> Option<String> {
        let r = self.find(x);
        self.frozen[r].clone()
    }
}
