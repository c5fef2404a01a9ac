package eventlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The embedded broker (kfake) keeps each partition segment in two files:
// N.dat, the record batches as Kafka frames them, and N.idx, one 15-byte
// entry per batch with the partition leader epoch and whether the batch
// belongs to a transaction. It writes the batch, then its entry, with no
// fsync between. A kill -9 between the two leaves a batch with no entry:
// kfake then loads that batch as outside any transaction (visible to
// read-committed readers even when its transaction never committed), and
// the next entry it appends lands in that batch's slot, shifting every
// later batch's flags by one. The fan-out wrote an inbox entry twice
// after such a kill (TestChaos).
//
// Both facts are in the batch itself: its header carries the leader epoch,
// and its attributes say whether it is transactional (a control batch is
// not "in" a transaction). repairSegmentIndexes rewrites every index entry
// that does not say what its batch says, before kfake loads the directory.

const (
	segIndexEntrySize  = 15 // kfake's indexEntrySize
	segIndexVersion    = 1  // kfake's currentPersistVersion
	batchHeaderMinSize = 61 // a record batch's fixed header
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// repairSegmentIndexes checks the index of every segment under dir's
// partitions folder against its batches and rewrites those that disagree.
// It returns how many index files it rewrote.
func repairSegmentIndexes(dir string) (int, error) {
	root := filepath.Join(dir, "partitions")
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	repaired := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		base, ok := strings.CutSuffix(d.Name(), ".dat")
		if d.IsDir() || !ok {
			return nil
		}
		if _, err := strconv.ParseInt(base, 10, 64); err != nil {
			return nil
		}
		changed, err := repairSegmentIndex(path, filepath.Join(filepath.Dir(path), base+".idx"))
		if err != nil {
			return fmt.Errorf("eventlog: segment index of %s: %w", path, err)
		}
		if changed {
			repaired++
		}
		return nil
	})
	return repaired, err
}

// repairSegmentIndex makes the index at idxPath hold one entry per whole
// batch of the segment at segPath, each with the batch's epoch and
// transaction flag, keeping entries that already agree. It reports whether
// it rewrote the file.
func repairSegmentIndex(segPath, idxPath string) (bool, error) {
	seg, err := os.ReadFile(segPath)
	if err != nil {
		return false, err
	}
	idx, err := os.ReadFile(idxPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	want := segmentIndexEntries(seg)
	out := make([]byte, 0, len(want)*segIndexEntrySize)
	changed := len(idx) != len(want)*segIndexEntrySize
	for i, w := range want {
		if off := i * segIndexEntrySize; off+segIndexEntrySize <= len(idx) {
			have := idx[off : off+segIndexEntrySize]
			if epoch, inTx, ok := decodeSegIndexEntry(have); ok && epoch == w.epoch && inTx == w.inTx {
				out = append(out, have...)
				continue
			}
		}
		changed = true
		out = append(out, encodeSegIndexEntry(w.epoch, w.maxTimestamp, w.inTx)...)
	}
	if !changed {
		return false, nil
	}
	tmp := idxPath + ".repair"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, idxPath)
}

type segIndexEntry struct {
	epoch        int32
	maxTimestamp int64
	inTx         bool
}

// segmentIndexEntries returns the entry each whole, intact batch of a
// segment should have, stopping where kfake's loader stops (a short or
// corrupt batch, which it truncates).
func segmentIndexEntries(seg []byte) []segIndexEntry {
	var out []segIndexEntry
	for pos := 0; pos+12 <= len(seg); {
		length := int(binary.BigEndian.Uint32(seg[pos+8 : pos+12]))
		if length < 0 || length > 1<<30 {
			break
		}
		size := 12 + length
		if size < batchHeaderMinSize || pos+size > len(seg) {
			break
		}
		b := seg[pos : pos+size]
		if binary.BigEndian.Uint32(b[17:21]) != crc32.Checksum(b[21:], castagnoli) {
			break
		}
		attrs := binary.BigEndian.Uint16(b[21:23])
		out = append(out, segIndexEntry{
			epoch:        int32(binary.BigEndian.Uint32(b[12:16])),
			maxTimestamp: int64(binary.BigEndian.Uint64(b[35:43])),
			inTx:         attrs&attrTransactional != 0 && attrs&attrControl == 0,
		})
		pos += size
	}
	return out
}

func encodeSegIndexEntry(epoch int32, maxTS int64, inTx bool) []byte {
	buf := make([]byte, segIndexEntrySize)
	buf[0] = segIndexVersion
	binary.LittleEndian.PutUint32(buf[2:6], uint32(epoch))
	binary.LittleEndian.PutUint64(buf[6:14], uint64(maxTS))
	if inTx {
		buf[14] = 1
	}
	buf[1] = byte(crc32.Checksum(buf[2:], castagnoli))
	return buf
}

func decodeSegIndexEntry(buf []byte) (epoch int32, inTx, ok bool) {
	if len(buf) < segIndexEntrySize || byte(crc32.Checksum(buf[2:segIndexEntrySize], castagnoli)) != buf[1] {
		return 0, false, false
	}
	return int32(binary.LittleEndian.Uint32(buf[2:6])), buf[14]&1 != 0, true
}
