//! Native stack budget: recursion (in scripts and in the parser) is stopped before
//! it can overflow the thread's stack, whatever the build profile's frame sizes.

pub(crate) struct StackGuard {
    base: usize,
    budget: usize,
}

#[inline(always)]
fn here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

impl StackGuard {
    pub(crate) fn new(budget: usize) -> Self {
        StackGuard {
            base: here(),
            budget,
        }
    }
    /// Whether more than the budget of stack is in use since the guard was created.
    #[inline]
    pub(crate) fn exceeded(&self) -> bool {
        self.base.abs_diff(here()) > self.budget
    }
}
