//! Reading a recorded device session back and re-folding it through the
//! engine to compare every decision; rendering transcripts.
