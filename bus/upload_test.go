package bus

import (
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// FuzzUploadedFiles feeds a builder's list of output files (host.closeTask
// outputs=...) through the hub's check: it never panics, and a file it lets
// through has a usable name, sizes that fit the Object Store's, a SHA-256
// digest, and chunk and meta subjects without wildcards or empty tokens.
func FuzzUploadedFiles(f *testing.F) {
	h := sha256.New()
	h.Write([]byte("hello\n"))
	good := jetstream.GetObjectDigestValue(h)
	for _, seed := range []string{
		`[{"name":"build.log","size":6,"chunks":1,"digest":"` + good + `"}]`,
		`[{"name":"../x","size":1,"chunks":1,"digest":"` + good + `"}]`,
		`[{"name":"a b.*>","size":0,"chunks":0,"digest":"` + good + `"}]`,
		`[{"name":"x","size":-1,"chunks":1,"digest":"SHA-256=AAAA"}]`,
		`[{"name":"x","size":1,"chunks":99999999999,"digest":"MD5=x"}]`,
		`{}`, `[null]`, `[{"name":""}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var files []UploadedFile
		if json.Unmarshal(data, &files) != nil {
			return
		}
		for _, file := range files {
			if err := file.Check(); err != nil {
				if AsFault(err).Code != CodeParameterError {
					t.Fatalf("%+v: %v is not a ParameterError", file, err)
				}
				continue
			}
			if !ValidOutputName(file.Name) || file.Size < 0 || file.Chunks < 0 || file.Chunks > 1<<32-1 || file.Size > 0 && file.Chunks == 0 {
				t.Fatalf("let through: %+v", file)
			}
			if d, err := jetstream.DecodeObjectDigest(file.Digest); err != nil || len(d) != sha256.Size {
				t.Fatalf("let through digest %q", file.Digest)
			}
			subject := UploadSubject(1, 1, 1, file.Name)
			for _, tok := range strings.Split(subject, ".") {
				if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
					t.Fatalf("name %q gives subject %q", file.Name, subject)
				}
			}
		}
	})
}
