// The legacy Go SDK (alibaba-cloud-sdk-go services/kms, signature v1) against
// `datakey kms serve`.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"datakey-operator/sdk-tests/harness"
)

// replayingTransport sends a request twice when armed, returning the second
// answer: how a captured, correctly signed request is replayed.
type replayingTransport struct {
	inner  *http.Transport
	replay bool
}

func (r *replayingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !r.replay {
		return r.inner.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	first := req.Clone(req.Context())
	first.Body = io.NopCloser(bytes.NewReader(body))
	res, err := r.inner.RoundTrip(first)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	harness.Check(res.StatusCode == 200, "the first send failed: %d", res.StatusCode)
	second := req.Clone(req.Context())
	second.Body = io.NopCloser(bytes.NewReader(body))
	return r.inner.RoundTrip(second)
}

type suite struct {
	target    harness.Target
	client    *kms.Client
	transport *replayingTransport
}

// newSuite builds the client at its defaults; the only transport setting is the test CA as root.
func newSuite(t harness.Target, secret string) *suite {
	id, realSecret := harness.Credentials()
	if secret == "" {
		secret = realSecret
	}
	transport := &replayingTransport{inner: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: t.CaPool()}}}
	config := sdk.NewConfig()
	config.Transport = transport
	client, err := kms.NewClientWithOptions("cn-hangzhou", config, credentials.NewAccessKeyCredential(id, secret))
	harness.Must(err)
	return &suite{target: t, client: client, transport: transport}
}

// at points a request at the target: this SDK takes the host and scheme per request.
func (s *suite) at(req *requests.RpcRequest) {
	req.Domain = s.target.Endpoint
	req.Scheme = s.target.Protocol
}

func codeOf(err error) string {
	var server *sdkerrors.ServerError
	if errors.As(err, &server) {
		return server.ErrorCode()
	}
	return ""
}

func must[T any](v T, err error) T {
	harness.Must(err)
	return v
}

func b64len(s string) int {
	raw, err := base64.StdEncoding.DecodeString(s)
	harness.Must(err)
	return len(raw)
}

func (s *suite) newKey() kms.KeyMetadata {
	req := kms.CreateCreateKeyRequest()
	s.at(req.RpcRequest)
	req.Description = "sdk suite"
	return must(s.client.CreateKey(req)).KeyMetadata
}

func (s *suite) generate(keyID, keySpec string, bytes int, context string) *kms.GenerateDataKeyResponse {
	req := kms.CreateGenerateDataKeyRequest()
	s.at(req.RpcRequest)
	req.KeyId, req.KeySpec, req.EncryptionContext = keyID, keySpec, context
	if bytes > 0 {
		req.NumberOfBytes = requests.NewInteger(bytes)
	}
	return must(s.client.GenerateDataKey(req))
}

func (s *suite) decrypt(blob, context string) (*kms.DecryptResponse, error) {
	req := kms.CreateDecryptRequest()
	s.at(req.RpcRequest)
	req.CiphertextBlob, req.EncryptionContext = blob, context
	return s.client.Decrypt(req)
}

func (s *suite) describe(keyID string) (*kms.DescribeKeyResponse, error) {
	req := kms.CreateDescribeKeyRequest()
	s.at(req.RpcRequest)
	req.KeyId = keyID
	return s.client.DescribeKey(req)
}

func (s *suite) listKeys() error {
	req := kms.CreateListKeysRequest()
	s.at(req.RpcRequest)
	_, err := s.client.ListKeys(req)
	return err
}

func cases(t harness.Target) []harness.Case {
	s := newSuite(t, "")
	return []harness.Case{
		{Name: "create-key", Run: func() {
			meta := s.newKey()
			harness.Check(meta.KeySpec == "Aliyun_AES_256" && meta.KeyState == "Enabled", "metadata %+v", meta)
			d := must(s.describe(meta.KeyId)).KeyMetadata
			harness.Check(strings.HasSuffix(d.Arn, "key/"+meta.KeyId), "arn")
		}},
		{Name: "generate-data-key", Run: func() {
			keyID := s.newKey().KeyId
			context := `{"app":"orders","tenant":"a b*~/"}`
			harness.Check(b64len(s.generate(keyID, "AES_128", 0, "").Plaintext) == 16, "AES_128 gives 16 bytes")
			r := s.generate(keyID, "", 48, context)
			harness.Check(r.KeyId == keyID && b64len(r.Plaintext) == 48, "NumberOfBytes=48")
			opened := must(s.decrypt(r.CiphertextBlob, context))
			harness.Check(opened.Plaintext == r.Plaintext, "decrypt")
			_, err := s.decrypt(r.CiphertextBlob, `{"app":"x"}`)
			harness.ExpectCode(err, codeOf, "InvalidParameter")
		}},
		{Name: "generate-data-key-without-plaintext", Run: func() {
			req := kms.CreateGenerateDataKeyWithoutPlaintextRequest()
			s.at(req.RpcRequest)
			req.KeyId, req.EncryptionContext = s.newKey().KeyId, `{"k":"v"}`
			r := must(s.client.GenerateDataKeyWithoutPlaintext(req))
			opened := must(s.decrypt(r.CiphertextBlob, `{"k":"v"}`))
			harness.Check(b64len(opened.Plaintext) == 32, "default 32 bytes")
		}},
		{Name: "key-versions", Run: func() {
			key := s.newKey()
			before := s.generate(key.KeyId, "", 0, "")
			create := kms.CreateCreateKeyVersionRequest()
			s.at(create.RpcRequest)
			create.KeyId = key.KeyId
			newVersion := must(s.client.CreateKeyVersion(create)).KeyVersion.KeyVersionId
			harness.Check(newVersion != key.PrimaryKeyVersion, "a new version")
			meta := must(s.describe(key.KeyId)).KeyMetadata
			harness.Check(meta.PrimaryKeyVersion == newVersion, "the new version is primary")
			list := kms.CreateListKeyVersionsRequest()
			s.at(list.RpcRequest)
			list.KeyId = key.KeyId
			listed := must(s.client.ListKeyVersions(list))
			harness.Check(listed.TotalCount == 2, "two versions, got %d", listed.TotalCount)
			after := s.generate(key.KeyId, "", 0, "")
			harness.Check(after.KeyVersionId == key.PrimaryKeyVersion, "GenerateDataKey keeps the initial version")
			old := must(s.decrypt(before.CiphertextBlob, ""))
			harness.Check(old.Plaintext == before.Plaintext, "old blobs stay decryptable")
		}},
		{Name: "encrypt-reencrypt", Run: func() {
			source, destination := s.newKey().KeyId, s.newKey().KeyId
			plaintext := base64.StdEncoding.EncodeToString([]byte("hello from the sdk suite"))
			enc := kms.CreateEncryptRequest()
			s.at(enc.RpcRequest)
			enc.KeyId, enc.Plaintext, enc.EncryptionContext = source, plaintext, `{"a":"1"}`
			sealed := must(s.client.Encrypt(enc))
			re := kms.CreateReEncryptRequest()
			s.at(re.RpcRequest)
			re.CiphertextBlob, re.SourceEncryptionContext = sealed.CiphertextBlob, `{"a":"1"}`
			re.DestinationKeyId, re.DestinationEncryptionContext = destination, `{"b":"2"}`
			moved := must(s.client.ReEncrypt(re))
			harness.Check(moved.KeyId == destination, "re-wrapped under the destination key")
			opened := must(s.decrypt(moved.CiphertextBlob, `{"b":"2"}`))
			harness.Check(opened.Plaintext == plaintext && opened.KeyId == destination, "round trip")
		}},
		{Name: "aliases", Run: func() {
			keyID := s.newKey().KeyId
			alias := fmt.Sprintf("alias/sdk-%x", rand.Uint64())
			create := kms.CreateCreateAliasRequest()
			s.at(create.RpcRequest)
			create.AliasName, create.KeyId = alias, keyID
			must(s.client.CreateAlias(create))
			harness.Check(s.generate(alias, "", 0, "").KeyId == keyID, "an alias resolves to its key")
			list := kms.CreateListAliasesByKeyIdRequest()
			s.at(list.RpcRequest)
			list.KeyId = keyID
			listed := must(s.client.ListAliasesByKeyId(list)).Aliases.Alias
			harness.Check(len(listed) == 1 && listed[0].AliasName == alias, "ListAliasesByKeyId")
			del := kms.CreateDeleteAliasRequest()
			s.at(del.RpcRequest)
			del.AliasName = alias
			must(s.client.DeleteAlias(del))
			_, err := s.describe(alias)
			harness.ExpectCode(err, codeOf, "Forbidden.AliasNotFound")
		}},
		{Name: "unknown-key", Run: func() {
			_, err := s.describe("00000000-0000-4000-8000-000000000000")
			harness.ExpectCode(err, codeOf, "Forbidden.KeyNotFound")
			var server *sdkerrors.ServerError
			harness.Check(errors.As(err, &server) && server.HttpStatus() == 404, "status 404")
		}},
		{Name: "wrong-secret", Run: func() {
			// The SDK compares the server string to sign with its own and recommends checking the secret.
			err := newSuite(t, "not-the-secret").listKeys()
			harness.ExpectCode(err, codeOf, "SignatureDoesNotMatch")
			var server *sdkerrors.ServerError
			harness.Check(errors.As(err, &server) && strings.Contains(server.Recommend(), "InvalidAccessKeySecret"),
				"Recommend names the secret: %v", err)
		}},
		// No stale-timestamp case: this SDK gives callers no way to choose the signing time.
		{Name: "replayed-nonce", Run: func() {
			s.transport.replay = true
			defer func() { s.transport.replay = false }()
			harness.ExpectCode(s.listKeys(), codeOf, "SignatureNonceUsed")
		}},
	}
}

func main() { harness.Run(cases) }
