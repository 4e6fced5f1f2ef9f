package bus

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// UploadChunk is the largest upload message.
const UploadChunk = 512 << 10

// UploadedFile is a task file a builder published in full. The builder
// reports it with the run's result (host.closeTask, host.failTask) and the
// hub makes it an object of TaskOutputStore by writing its meta: the chunks
// are already where the Object Store reads them.
type UploadedFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Chunks int64  `json:"chunks"`
	// Digest is the Object Store's: "SHA-256=" and the base64url sum.
	Digest string `json:"digest"`
}

// Check reports what is wrong with an uploaded file's description.
func (f UploadedFile) Check() error {
	switch {
	case !ValidOutputName(f.Name):
		return ParameterError("invalid output file name %q", f.Name)
	case f.Size < 0 || f.Chunks < 0 || f.Chunks > 1<<32-1 || f.Size > 0 && f.Chunks == 0:
		return ParameterError("output %s: invalid size %d in %d chunks", f.Name, f.Size, f.Chunks)
	}
	sum, err := jetstream.DecodeObjectDigest(f.Digest)
	if err != nil || len(sum) != sha256.Size {
		return ParameterError("output %s: invalid digest %q", f.Name, f.Digest)
	}
	return nil
}

// ValidOutputName reports whether name may name a task output file: not
// empty, not absolute, no "..".
func ValidOutputName(name string) bool {
	return name != "" && !strings.Contains(name, "..") && !strings.HasPrefix(name, "/")
}

// Upload publishes one task file of one run in chunks of at most
// UploadChunk bytes to UploadSubject, keeping the size, chunk count and
// digest the hub records. Calls must not overlap.
type Upload struct {
	js      jetstream.JetStream
	hostID  int64
	taskID  int64
	attempt int64
	name    string
	size    int64
	chunks  int64
	sum     hash.Hash
	final   bool
}

// NewUpload starts the upload of file name of a task's attempt on a host.
func NewUpload(js jetstream.JetStream, hostID, taskID, attempt int64, name string) *Upload {
	return &Upload{js: js, hostID: hostID, taskID: taskID, attempt: attempt, name: name, sum: sha256.New()}
}

// Name is the file's name.
func (u *Upload) Name() string { return u.name }

// Publish sends data; final marks the end of the file (then with no data
// at all too, so a reader following the file knows it is complete).
func (u *Upload) Publish(ctx context.Context, data []byte, final bool) error {
	if u.final {
		return GenericError("output %s is already complete", u.name)
	}
	for {
		n := min(len(data), UploadChunk)
		last := final && n == len(data)
		m := nats.NewMsg(UploadSubject(u.hostID, u.taskID, u.attempt, u.name))
		m.Data = data[:n]
		m.Header.Set(HeaderUploadName, u.name)
		if last {
			m.Header.Set(HeaderUploadFinal, "1")
		}
		// A publish retried by the client is stored once; the host id is
		// part of the id, so another host's chunk never makes it a duplicate.
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%d-%d-%d-%s-%d", u.hostID, u.taskID, u.attempt, EscapeToken(u.name), u.size))
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := u.js.PublishMsg(pctx, m)
		cancel()
		if err != nil {
			return fmt.Errorf("upload %s: %w", u.name, err)
		}
		u.sum.Write(data[:n])
		u.size += int64(n)
		u.chunks++
		data = data[n:]
		if last {
			u.final = true
		}
		if len(data) == 0 {
			return nil
		}
	}
}

// File describes the upload once its final chunk is stored.
func (u *Upload) File() (UploadedFile, bool) {
	if !u.final {
		return UploadedFile{}, false
	}
	return UploadedFile{Name: u.name, Size: u.size, Chunks: u.chunks, Digest: jetstream.GetObjectDigestValue(u.sum)}, true
}

// Uploads are the output files of one run: each name is started once, and
// Files lists those uploaded in full, as the run reports them with its result.
type Uploads struct {
	js                      jetstream.JetStream
	hostID, taskID, attempt int64

	mu   sync.Mutex
	list []*Upload // in the order started
}

// NewUploads returns the output files of a task's attempt on a host.
func NewUploads(js jetstream.JetStream, hostID, taskID, attempt int64) *Uploads {
	return &Uploads{js: js, hostID: hostID, taskID: taskID, attempt: attempt}
}

// Start starts the upload of file name; a name can be used once.
func (s *Uploads) Start(name string) (*Upload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find(name) != nil {
		return nil, GenericError("task output %s is uploaded already", name)
	}
	u := NewUpload(s.js, s.hostID, s.taskID, s.attempt, name)
	s.list = append(s.list, u)
	return u, nil
}

// Get returns the upload of file name, started if it was not.
func (s *Uploads) Get(name string) *Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.find(name); u != nil {
		return u
	}
	u := NewUpload(s.js, s.hostID, s.taskID, s.attempt, name)
	s.list = append(s.list, u)
	return u
}

func (s *Uploads) find(name string) *Upload {
	for _, u := range s.list {
		if u.name == name {
			return u
		}
	}
	return nil
}

// All returns every upload started, in order.
func (s *Uploads) All() []*Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Upload(nil), s.list...)
}

// Files lists the files uploaded in full (never nil: the hub gets a list).
func (s *Uploads) Files() []UploadedFile {
	out := []UploadedFile{}
	for _, u := range s.All() {
		if f, ok := u.File(); ok {
			out = append(out, f)
		}
	}
	return out
}
