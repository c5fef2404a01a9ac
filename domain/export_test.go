package domain

// DecodeInboxCanonical is the fast path of DecodeInbox, for tests that it
// is taken.
var DecodeInboxCanonical = decodeInboxCanonical

// EncodeInboxCanonical is Encode's fast path for inbox entries, and
// EncodeGeneral its general path, for tests that the two agree.
var (
	EncodeInboxCanonical = encodeInboxCanonical
	EncodeGeneral        = encode
)

// DecodeCanonical is Decode's fast path for the send path's events, and
// DecodeGeneral its general path, for tests that the two agree.
var (
	DecodeCanonical = decodeCanonical
	DecodeGeneral   = decodeGeneral
	EncodeCanonical = encodeCanonical
)

// InboxFixedLen is inboxFixedLen, for TestEncodeInboxAllocatesOnce.
const InboxFixedLen = inboxFixedLen
