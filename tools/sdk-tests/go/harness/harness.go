// Package harness is shared by the Go SDK suites: targets from the environment,
// one JSON line per case on stdout (see ../../README.md).
package harness

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
)

// Target is one server to run every case against.
type Target struct {
	Name     string  `json:"name"`
	Endpoint string  `json:"endpoint"`
	Protocol string  `json:"protocol"`
	Ca       *string `json:"ca"`
}

// CaPEM is the test CA's PEM text, or "" for plain HTTP.
func (t Target) CaPEM() string {
	if t.Ca == nil {
		return ""
	}
	pem, err := os.ReadFile(*t.Ca)
	Must(err)
	return string(pem)
}

// CaPool is the test CA as a certificate pool, or nil for plain HTTP.
func (t Target) CaPool() *x509.CertPool {
	if t.Ca == nil {
		return nil
	}
	pool := x509.NewCertPool()
	Check(pool.AppendCertsFromPEM([]byte(t.CaPEM())), "no certificate in %s", *t.Ca)
	return pool
}

// Credentials of the one account the server serves.
func Credentials() (id, secret string) {
	return os.Getenv("KMS_ACCESS_KEY_ID"), os.Getenv("KMS_ACCESS_KEY_SECRET")
}

type caseFailed struct{ msg string }

// Check fails the running case unless ok.
func Check(ok bool, format string, args ...any) {
	if !ok {
		panic(caseFailed{fmt.Sprintf(format, args...)})
	}
}

// Must fails the running case on an error.
func Must(err error) {
	if err != nil {
		panic(caseFailed{err.Error()})
	}
}

// ExpectCode checks that err is an SDK error whose code (by codeOf) is want.
func ExpectCode(err error, codeOf func(error) string, want string) {
	Check(err != nil, "expected error %s, but the call succeeded", want)
	got := codeOf(err)
	Check(got == want, "expected error %s, got %q: %v", want, got, err)
}

// Case is one named check.
type Case struct {
	Name string
	Run  func()
}

// Run runs the cases of every target and exits non-zero when one failed.
func Run(casesFor func(Target) []Case) {
	var targets []Target
	Must(json.Unmarshal([]byte(os.Getenv("KMS_TARGETS")), &targets))
	failed := 0
	out := json.NewEncoder(os.Stdout)
	for _, target := range targets {
		for _, c := range casesFor(target) {
			result := map[string]any{"target": target.Name, "case": c.Name, "ok": true}
			if msg := runOne(c); msg != "" {
				failed++
				result["ok"] = false
				result["error"] = msg
			}
			_ = out.Encode(result)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func runOne(c Case) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(caseFailed); ok {
				msg = f.msg
			} else {
				msg = fmt.Sprint(r)
			}
		}
	}()
	c.Run()
	return ""
}
