// The current-generation Go SDK (kms-20160120/v3 on darabonba-openapi/v2,
// ACS3-HMAC-SHA256 by default) against `datakey kms serve`.
package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand"
	"strings"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	kms "github.com/alibabacloud-go/kms-20160120/v3/client"
	util "github.com/alibabacloud-go/tea-utils/v2/service"
	"github.com/alibabacloud-go/tea/tea"

	"datakey-operator/sdk-tests/harness"
)

// clientFor builds the SDK at its defaults: endpoint, protocol and, for HTTPS, the CA (PEM text).
func clientFor(t harness.Target, secret string) *kms.Client {
	id, realSecret := harness.Credentials()
	if secret == "" {
		secret = realSecret
	}
	config := &openapi.Config{
		AccessKeyId:     tea.String(id),
		AccessKeySecret: tea.String(secret),
		Endpoint:        tea.String(t.Endpoint),
		Protocol:        tea.String(t.Protocol),
		RegionId:        tea.String("cn-hangzhou"),
	}
	if pem := t.CaPEM(); pem != "" {
		config.Ca = tea.String(pem)
	}
	client, err := kms.NewClient(config)
	harness.Must(err)
	return client
}

func codeOf(err error) string {
	var sdk *tea.SDKError
	if errors.As(err, &sdk) {
		return tea.StringValue(sdk.Code)
	}
	return ""
}

func statusOf(err error) int {
	var sdk *tea.SDKError
	if errors.As(err, &sdk) {
		return tea.IntValue(sdk.StatusCode)
	}
	return 0
}

func must[T any](v T, err error) T {
	harness.Must(err)
	return v
}

func b64len(s *string) int {
	raw, err := base64.StdEncoding.DecodeString(tea.StringValue(s))
	harness.Must(err)
	return len(raw)
}

func nonce() string { return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()) }

func withHeaders(headers map[string]string) *util.RuntimeOptions {
	h := map[string]*string{}
	for k, v := range headers {
		h[k] = tea.String(v)
	}
	return &util.RuntimeOptions{ExtendsParameters: &util.ExtendsParameters{Headers: h}}
}

func cases(t harness.Target) []harness.Case {
	c := clientFor(t, "")
	newKey := func() *kms.CreateKeyResponseBodyKeyMetadata {
		return must(c.CreateKey(&kms.CreateKeyRequest{Description: tea.String("sdk suite")})).Body.KeyMetadata
	}
	return []harness.Case{
		{Name: "create-key", Run: func() {
			meta := newKey()
			harness.Check(tea.StringValue(meta.KeySpec) == "Aliyun_AES_256", "KeySpec %v", tea.StringValue(meta.KeySpec))
			d := must(c.DescribeKey(&kms.DescribeKeyRequest{KeyId: meta.KeyId})).Body.KeyMetadata
			harness.Check(strings.HasSuffix(tea.StringValue(d.Arn), "key/"+tea.StringValue(meta.KeyId)), "arn")
		}},
		{Name: "generate-data-key", Run: func() {
			keyID := newKey().KeyId
			context := map[string]interface{}{"app": "orders", "tenant": "a b*~/"}
			r16 := must(c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: keyID, KeySpec: tea.String("AES_128")})).Body
			harness.Check(b64len(r16.Plaintext) == 16, "AES_128 gives 16 bytes")
			r := must(c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: keyID, NumberOfBytes: tea.Int32(48), EncryptionContext: context})).Body
			harness.Check(b64len(r.Plaintext) == 48 && tea.StringValue(r.KeyId) == tea.StringValue(keyID), "NumberOfBytes=48")
			opened := must(c.Decrypt(&kms.DecryptRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: context})).Body
			harness.Check(tea.StringValue(opened.Plaintext) == tea.StringValue(r.Plaintext), "decrypt")
			_, err := c.Decrypt(&kms.DecryptRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: map[string]interface{}{"app": "x"}})
			harness.ExpectCode(err, codeOf, "InvalidParameter")
		}},
		{Name: "generate-data-key-without-plaintext", Run: func() {
			keyID := newKey().KeyId
			context := map[string]interface{}{"k": "v"}
			r := must(c.GenerateDataKeyWithoutPlaintext(&kms.GenerateDataKeyWithoutPlaintextRequest{KeyId: keyID, EncryptionContext: context})).Body
			opened := must(c.Decrypt(&kms.DecryptRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: context})).Body
			harness.Check(b64len(opened.Plaintext) == 32, "default 32 bytes")
		}},
		{Name: "key-versions", Run: func() {
			key := newKey()
			initial := tea.StringValue(key.PrimaryKeyVersion)
			before := must(c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: key.KeyId})).Body
			created := must(c.CreateKeyVersion(&kms.CreateKeyVersionRequest{KeyId: key.KeyId})).Body
			newVersion := tea.StringValue(created.KeyVersion.KeyVersionId)
			harness.Check(newVersion != initial, "a new version")
			meta := must(c.DescribeKey(&kms.DescribeKeyRequest{KeyId: key.KeyId})).Body.KeyMetadata
			harness.Check(tea.StringValue(meta.PrimaryKeyVersion) == newVersion, "the new version is primary")
			listed := must(c.ListKeyVersions(&kms.ListKeyVersionsRequest{KeyId: key.KeyId})).Body
			harness.Check(tea.Int32Value(listed.TotalCount) == 2, "two versions, got %d", tea.Int32Value(listed.TotalCount))
			after := must(c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: key.KeyId})).Body
			harness.Check(tea.StringValue(after.KeyVersionId) == initial, "GenerateDataKey keeps the initial version")
			old := must(c.Decrypt(&kms.DecryptRequest{CiphertextBlob: before.CiphertextBlob})).Body
			harness.Check(tea.StringValue(old.Plaintext) == tea.StringValue(before.Plaintext), "old blobs stay decryptable")
		}},
		{Name: "encrypt-reencrypt", Run: func() {
			source, destination := newKey().KeyId, newKey().KeyId
			plaintext := base64.StdEncoding.EncodeToString([]byte("hello from the sdk suite"))
			sealed := must(c.Encrypt(&kms.EncryptRequest{KeyId: source, Plaintext: tea.String(plaintext), EncryptionContext: map[string]interface{}{"a": "1"}})).Body
			moved := must(c.ReEncrypt(&kms.ReEncryptRequest{
				CiphertextBlob:               sealed.CiphertextBlob,
				SourceEncryptionContext:      map[string]interface{}{"a": "1"},
				DestinationKeyId:             destination,
				DestinationEncryptionContext: map[string]interface{}{"b": "2"},
			})).Body
			harness.Check(tea.StringValue(moved.KeyId) == tea.StringValue(destination), "re-wrapped under the destination key")
			opened := must(c.Decrypt(&kms.DecryptRequest{CiphertextBlob: moved.CiphertextBlob, EncryptionContext: map[string]interface{}{"b": "2"}})).Body
			harness.Check(tea.StringValue(opened.Plaintext) == plaintext, "round trip")
		}},
		{Name: "aliases", Run: func() {
			keyID := newKey().KeyId
			alias := fmt.Sprintf("alias/sdk-%x", rand.Uint64())
			must(c.CreateAlias(&kms.CreateAliasRequest{AliasName: tea.String(alias), KeyId: keyID}))
			r := must(c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: tea.String(alias)})).Body
			harness.Check(tea.StringValue(r.KeyId) == tea.StringValue(keyID), "an alias resolves to its key")
			listed := must(c.ListAliasesByKeyId(&kms.ListAliasesByKeyIdRequest{KeyId: keyID})).Body
			harness.Check(len(listed.Aliases.Alias) == 1 && tea.StringValue(listed.Aliases.Alias[0].AliasName) == alias, "ListAliasesByKeyId")
			must(c.DeleteAlias(&kms.DeleteAliasRequest{AliasName: tea.String(alias)}))
			_, err := c.DescribeKey(&kms.DescribeKeyRequest{KeyId: tea.String(alias)})
			harness.ExpectCode(err, codeOf, "Forbidden.AliasNotFound")
		}},
		{Name: "unknown-key", Run: func() {
			_, err := c.DescribeKey(&kms.DescribeKeyRequest{KeyId: tea.String("00000000-0000-4000-8000-000000000000")})
			harness.ExpectCode(err, codeOf, "Forbidden.KeyNotFound")
			harness.Check(statusOf(err) == 404, "status %d", statusOf(err))
		}},
		{Name: "wrong-secret", Run: func() {
			_, err := clientFor(t, "not-the-secret").ListKeys(&kms.ListKeysRequest{})
			harness.ExpectCode(err, codeOf, "SignatureDoesNotMatch")
		}},
		{Name: "stale-timestamp", Run: func() {
			_, err := c.ListKeysWithOptions(&kms.ListKeysRequest{}, withHeaders(map[string]string{"x-acs-date": "2020-01-01T00:00:00Z"}))
			harness.ExpectCode(err, codeOf, "IllegalTimestamp")
		}},
		{Name: "replayed-nonce", Run: func() {
			same := withHeaders(map[string]string{"x-acs-signature-nonce": nonce()})
			must(c.ListKeysWithOptions(&kms.ListKeysRequest{}, same))
			_, err := c.ListKeysWithOptions(&kms.ListKeysRequest{}, same)
			harness.ExpectCode(err, codeOf, "SignatureNonceUsed")
		}},
	}
}

func main() { harness.Run(cases) }
