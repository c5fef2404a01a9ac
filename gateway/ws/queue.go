package ws

import (
	"sync"
)

// outFrame is one encoded server frame: head, then body. A message frame's
// body (everything but its epoch and position) is encoded once per message
// and shared by every connection it goes to (see bodyCache); its head is
// encoded once per inbox entry and shared by the user's connections. Other
// frames are all head.
type outFrame struct {
	head, body []byte
}

func (f outFrame) size() int { return len(f.head) + len(f.body) }

// sendQueue is a connection's bounded queue of frames waiting for its
// writer, bounded in frames and in bytes. It holds no memory while
// nothing waits. Safe for concurrent use; its lock is the last one taken
// (see the lock order in doc.go).
type sendQueue struct {
	maxFrames, maxBytes int

	mu      sync.Mutex
	frames  []outFrame
	bytes   int // of frames
	writing int // frames the writer has taken and not yet written
	wbytes  int // their bytes

	wake    chan struct{} // the writer has frames to write
	drained chan struct{} // the writer wrote a frame (a sync waits on it)
}

func newSendQueue(maxFrames, maxBytes int) *sendQueue {
	return &sendQueue{maxFrames: maxFrames, maxBytes: maxBytes,
		wake: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
}

// push queues f for the writer and reports whether it fit. A frame larger
// than the whole byte bound fits only into an empty queue, so that one
// large message can always be written, alone.
func (q *sendQueue) push(f outFrame) bool {
	q.mu.Lock()
	frames, bytes := len(q.frames)+q.writing, q.bytes+q.wbytes
	ok := frames < q.maxFrames && (bytes+f.size() <= q.maxBytes || frames == 0)
	if ok {
		q.frames = append(q.frames, f)
		q.bytes += f.size()
	}
	q.mu.Unlock()
	if ok {
		select {
		case q.wake <- struct{}{}:
		default: // the writer has been woken already
		}
	}
	return ok
}

// take hands the writer every waiting frame; they count as queued until
// the writer reports each one written.
func (q *sendQueue) take() []outFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.frames
	q.frames = nil
	q.writing += len(batch)
	q.wbytes += q.bytes
	q.bytes = 0
	return batch
}

// written reports one frame of the batch written.
func (q *sendQueue) written(f outFrame) {
	q.mu.Lock()
	q.writing--
	q.wbytes -= f.size()
	q.mu.Unlock()
	select {
	case q.drained <- struct{}{}:
	default:
	}
}

// queued returns the frames and bytes waiting or being written.
func (q *sendQueue) queued() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames) + q.writing, q.bytes + q.wbytes
}

// halfFull reports whether half of either bound is taken: live delivery
// stops there and the connection catches up from the store instead.
func (q *sendQueue) halfFull() bool {
	frames, bytes := q.queued()
	return frames >= q.maxFrames/2 || bytes >= q.maxBytes/2
}

// roomFor reports whether frames more frames of bytes bytes fit in half of
// the queue's bounds, counting those being written; an empty queue has
// room for anything.
func (q *sendQueue) roomFor(frames, bytes int) bool {
	f, b := q.queued()
	return f == 0 || (f+frames <= q.maxFrames/2 && b+bytes <= q.maxBytes/2)
}
