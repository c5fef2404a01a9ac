package domain

// DecodeInboxCanonical is the fast path of DecodeInbox, for tests that it
// is taken.
var DecodeInboxCanonical = decodeInboxCanonical
