//! Every stored message of every stream, in one slab, threaded on two lists
//! at once: the global one in push order (which is time order, so its head is
//! the oldest message of all: the next to go by age or by the memory cap),
//! and each stream's own, oldest to newest.
//!
//! Both lists are doubly linked through `u32` slot indices, so a message
//! leaves from anywhere in O(1) and nothing is left behind: a uid pushed far
//! past `--history-size` loses its oldest message from the middle of the
//! global order at once, instead of leaving a stale entry in a global queue
//! until it ages out. A message's offset is not stored: a stream's messages
//! are contiguous, so it follows from the stream's top and the position in
//! its list.
//!
//! A freed slot goes on a free list (linked through `newer`) and is reused;
//! the slab keeps the capacity of its peak, which the memory cap bounds.

/// No slot: the end of a list.
pub(super) const NIL: u32 = u32::MAX;

/// One stored message and its four links (40 bytes on a 64-bit target).
#[derive(Debug)]
pub(super) struct Slot {
    /// The message's text, copied out of the pusher's buffer: a text-port
    /// line is a slice of a larger read buffer, which it must not keep alive.
    pub payload: Box<str>,
    /// Milliseconds since the history's start, wrapping (ages are taken with
    /// `wrapping_sub`, correct while every message is younger than 49 days;
    /// the time to live is capped well below that).
    pub time: u32,
    /// The stream (record index) it belongs to.
    pub stream: u32,
    older: u32,
    newer: u32,
    stream_older: u32,
    stream_newer: u32,
}

/// One stream's list: its ends and length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    /// Its oldest message (`NIL`: none).
    pub oldest: u32,
    /// Its newest message (`NIL`: none).
    pub newest: u32,
    /// Messages in it.
    pub len: u32,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            oldest: NIL,
            newest: NIL,
            len: 0,
        }
    }
}

/// The slab and the global list.
#[derive(Debug)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    free: u32,
    oldest: u32,
    newest: u32,
    len: usize,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots {
            slots: Vec::new(),
            free: NIL,
            oldest: NIL,
            newest: NIL,
            len: 0,
        }
    }
}

impl Slots {
    /// Messages stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots the slab holds, in use or free (its high-water mark).
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is left to give (`u32` indices, `NIL` excluded): the
    /// caller frees the oldest first.
    pub fn is_full(&self) -> bool {
        self.free == NIL && self.slots.len() >= NIL as usize
    }

    /// The oldest message of all.
    pub fn oldest(&self) -> Option<(u32, &Slot)> {
        self.slot(self.oldest).map(|s| (self.oldest, s))
    }

    /// The slot at `i` (`None` for `NIL`).
    pub fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }

    /// The message after `i` in its stream.
    pub fn stream_newer(&self, i: u32) -> u32 {
        self.slot(i).map_or(NIL, |s| s.stream_newer)
    }

    /// The message before `i` in its stream.
    pub fn stream_older(&self, i: u32) -> u32 {
        self.slot(i).map_or(NIL, |s| s.stream_older)
    }

    /// Appends a message to `chain` (stream `stream`) and to the global list.
    /// The caller has checked [`Slots::is_full`].
    pub fn push(&mut self, chain: &mut Chain, stream: u32, payload: Box<str>, time: u32) {
        let slot = Slot {
            payload,
            time,
            stream,
            older: self.newest,
            newer: NIL,
            stream_older: chain.newest,
            stream_newer: NIL,
        };
        let i = match self.slots.get_mut(self.free as usize) {
            Some(free) => {
                let i = self.free;
                self.free = free.newer;
                *free = slot;
                i
            }
            None => {
                // `is_full` said a new index below `NIL` is left.
                let i = u32::try_from(self.slots.len()).unwrap_or(NIL);
                self.slots.push(slot);
                i
            }
        };
        match self.slots.get_mut(self.newest as usize) {
            Some(s) => s.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
        match self.slots.get_mut(chain.newest as usize) {
            Some(s) => s.stream_newer = i,
            None => chain.oldest = i,
        }
        chain.newest = i;
        chain.len += 1;
        self.len += 1;
    }

    /// Takes message `i` out of both lists (`chain` is its stream's) and
    /// frees its slot; returns its payload's length.
    pub fn remove(&mut self, chain: &mut Chain, i: u32) -> usize {
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return 0;
        };
        let payload = std::mem::take(&mut slot.payload);
        let (older, newer) = (slot.older, slot.newer);
        let (s_older, s_newer) = (slot.stream_older, slot.stream_newer);
        slot.newer = self.free;
        self.free = i;
        match self.slots.get_mut(older as usize) {
            Some(s) => s.newer = newer,
            None => self.oldest = newer,
        }
        match self.slots.get_mut(newer as usize) {
            Some(s) => s.older = older,
            None => self.newest = older,
        }
        match self.slots.get_mut(s_older as usize) {
            Some(s) => s.stream_newer = s_newer,
            None => chain.oldest = s_newer,
        }
        match self.slots.get_mut(s_newer as usize) {
            Some(s) => s.stream_older = s_older,
            None => chain.newest = s_older,
        }
        chain.len -= 1;
        self.len -= 1;
        payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(slots: &Slots, chain: &Chain) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = chain.oldest;
        while let Some(s) = slots.slot(i) {
            out.push(s.payload.to_string());
            i = slots.stream_newer(i);
        }
        out
    }

    #[test]
    fn a_slot_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
    }

    #[test]
    fn a_message_leaves_both_lists_from_anywhere_and_its_slot_is_reused() {
        let mut slots = Slots::default();
        let (mut a, mut b) = (Chain::default(), Chain::default());
        slots.push(&mut a, 0, "a1".into(), 1);
        slots.push(&mut b, 1, "b1".into(), 2);
        slots.push(&mut a, 0, "a2".into(), 3);
        // a1 is the oldest of all; removing b1 (the middle) keeps the order.
        assert_eq!(slots.remove(&mut b, 1), 2);
        assert_eq!(b.len, 0);
        assert_eq!((b.oldest, b.newest), (NIL, NIL));
        assert_eq!(slots.oldest().map(|(i, _)| i), Some(0));
        assert_eq!(slots.remove(&mut a, 0), 2);
        assert_eq!(walk(&slots, &a), ["a2"]);
        assert_eq!(slots.oldest().map(|(i, _)| i), Some(2));
        // The freed slots are reused before the slab grows.
        slots.push(&mut b, 1, "b2".into(), 4);
        slots.push(&mut b, 1, "b3".into(), 5);
        assert_eq!(slots.slots.len(), 3);
        assert_eq!(walk(&slots, &b), ["b2", "b3"]);
        assert_eq!(slots.len(), 3);
    }
}
