package eventlog

// Topics holds every topic name the chat uses. It is the one place they are
// written down; schemas/asyncapi.yaml documents them.
type Topics struct {
	// Channels carries channel.created, member.added, member.removed and
	// message.sent, keyed by channel id: one total order per channel, and
	// membership in the same order as messages.
	Channels string
	// Sessions carries user.registered, device.logged_in, device.logged_out
	// (and later heartbeats and acknowledgements), keyed by user id.
	Sessions string
	// Inbox carries inbox.message, one record per recipient, keyed by the
	// recipient's user id. Its name ends in the inbox epoch: rebuilding the
	// inboxes writes a new topic with a new epoch.
	Inbox string
	// FanoutState is the fan-out projection's changelog: each channel's
	// membership as the fan-out last saw it, keyed by channel id and
	// partitioned like Channels, written in the fan-out's transactions.
	FanoutState string
	// Presence carries presence.changed, keyed by user id: each user's
	// latest presence (compacted on a real broker). Gateways tail it. Its
	// name ends in the presence epoch.
	Presence string
	// PresenceState is the presence projection's changelog, partitioned
	// like Sessions.
	PresenceState string
	// Sends carries send.requested, keyed by sender: the sends processor
	// (projections/sends) decides each (sender, client message id) once,
	// in this topic's order.
	Sends string
	// SendsState is the sends processor's changelog: per partition of
	// Sends, the offset it has processed up to, in its transactions.
	SendsState string
	// SendReplies carries send.decided, the processor's answers, keyed by
	// the gateway process that waits for them (SendRequested.ReplyTo).
	SendReplies string
	// Epochs carries epoch.started, keyed by output: which epoch of the
	// inbox and of presence every node reads (compacted).
	Epochs string
}

// NewTopics returns the topic names for a prefix (default "chat"), an
// inbox epoch and a presence epoch (default 1).
func NewTopics(prefix string, inboxEpoch, presenceEpoch int32) Topics {
	if prefix == "" {
		prefix = "chat"
	}
	return Topics{
		Channels:      prefix + ".channels",
		Sessions:      prefix + ".sessions",
		Inbox:         Epoched(prefix+".inbox", inboxEpoch),
		FanoutState:   Epoched(prefix+".fanout-state", inboxEpoch),
		Presence:      Epoched(prefix+".presence", presenceEpoch),
		PresenceState: Epoched(prefix+".presence-state", presenceEpoch),
		Epochs:        prefix + ".epochs",
		Sends:         prefix + ".sends",
		SendsState:    prefix + ".sends-state",
		SendReplies:   prefix + ".send-replies",
	}
}

// All lists every topic.
func (t Topics) All() []string {
	return []string{t.Channels, t.Sessions, t.Inbox, t.FanoutState, t.Presence, t.PresenceState, t.Epochs, t.Sends, t.SendsState, t.SendReplies}
}

// Compacted lists the topics that keep only each key's latest record.
func (t Topics) Compacted() []string {
	return []string{t.FanoutState, t.Presence, t.PresenceState, t.Epochs, t.SendsState}
}
