// Runs the instance-SDK cases of test/kms-instance-api/go-sdk.test.ts with the
// official Go instance SDK (github.com/aliyun/alibabacloud-dkms-gcs-go-sdk) at
// its default settings. Input: a JSON file (argv[1]); output: one JSON object
// of results on stdout, checked by the Jest test.
package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/alibabacloud-go/tea/tea"
	dedicatedkmsopenapi "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi"
	credential "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-credential"
	dedicatedkmsopenapiutil "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util"
	api "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util/protobuf/api"
	dedicatedkmssdk "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"
	"github.com/golang/protobuf/proto"
)

type clientKey struct {
	Content  string `json:"content"`
	Password string `json:"password"`
}

type input struct {
	Phase     string               `json:"phase"`
	Endpoint  string               `json:"endpoint"`
	Ca        string               `json:"ca"`
	KeyId     string               `json:"keyId"`
	Clients   map[string]clientKey `json:"clients"`
	OldBlob   []byte               `json:"oldBlob"`
	OldAad    []byte               `json:"oldAad"`
	OldDigest string               `json:"oldDigest"`
	// A DataKey's Secret, its values as stored (base64 text for the binary ones).
	Secret map[string]string `json:"secret"`
}

type result map[string]interface{}

func client(in input, name string) *dedicatedkmssdk.Client {
	ck := in.Clients[name]
	c, err := dedicatedkmssdk.NewClient(&dedicatedkmsopenapi.Config{
		Protocol:         tea.String("https"),
		ClientKeyContent: tea.String(ck.Content),
		Password:         tea.String(ck.Password),
		Endpoint:         tea.String(in.Endpoint),
		Ca:               tea.String(in.Ca),
	})
	if err != nil {
		panic(fmt.Sprintf("client %s: %v", name, err))
	}
	return c
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func failure(err error) result {
	if sdkErr, ok := err.(*tea.SDKError); ok {
		r := result{"ok": false, "code": tea.StringValue(sdkErr.Code), "message": tea.StringValue(sdkErr.Message)}
		var data map[string]interface{}
		if json.Unmarshal([]byte(tea.StringValue(sdkErr.Data)), &data) == nil {
			r["httpCode"] = data["httpCode"]
			r["requestId"] = data["requestId"]
		}
		return r
	}
	return result{"ok": false, "error": err.Error()}
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		panic(err)
	}
	out := map[string]result{}
	if in.Phase == "after" {
		runAfter(in, out)
	} else if in.Phase == "secret" {
		out["secretDecrypt"] = openSecret(in)
	} else {
		runBefore(in, out)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}

func runBefore(in input, out map[string]result) {
	good := client(in, "good")
	aad := []byte("orders/payments")

	gen, err := good.AdvanceGenerateDataKey(&dedicatedkmssdk.AdvanceGenerateDataKeyRequest{
		KeyId: tea.String(in.KeyId), NumberOfBytes: tea.Int32(32), Aad: aad,
	})
	if err != nil {
		out["advanceGenerateDataKey"] = failure(err)
		return
	}
	out["advanceGenerateDataKey"] = result{
		"ok": true, "keyId": tea.StringValue(gen.KeyId), "keyVersionId": tea.StringValue(gen.KeyVersionId),
		"algorithm": tea.StringValue(gen.Algorithm), "ivBytes": len(gen.Iv), "plaintextBytes": len(gen.Plaintext),
		"requestId": tea.StringValue(gen.RequestId), "blob": gen.CiphertextBlob, "aad": aad,
		"plaintextDigest": digest(gen.Plaintext),
	}

	dec, err := good.AdvanceDecrypt(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: gen.CiphertextBlob, Aad: aad})
	if err != nil {
		out["advanceDecryptSameAad"] = failure(err)
	} else {
		out["advanceDecryptSameAad"] = result{"ok": true, "matches": bytes.Equal(dec.Plaintext, gen.Plaintext),
			"keyVersionId": tea.StringValue(dec.KeyVersionId), "keyId": tea.StringValue(dec.KeyId)}
	}
	_, err = good.AdvanceDecrypt(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: gen.CiphertextBlob, Aad: []byte("orders/other")})
	out["advanceDecryptOtherAad"] = failureOrOk(err)

	message := []byte("attack at dawn")
	enc, err := good.AdvanceEncrypt(&dedicatedkmssdk.AdvanceEncryptRequest{KeyId: tea.String(in.KeyId), Plaintext: message, Aad: aad})
	if err != nil {
		out["advanceEncrypt"] = failure(err)
	} else {
		back, err := good.AdvanceDecrypt(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: enc.CiphertextBlob, Aad: aad})
		if err != nil {
			out["advanceEncrypt"] = failure(err)
		} else {
			out["advanceEncrypt"] = result{"ok": true, "keyVersionId": tea.StringValue(enc.KeyVersionId),
				"matches": bytes.Equal(back.Plaintext, message)}
		}
	}

	dk, err := good.GenerateDataKey(&dedicatedkmssdk.GenerateDataKeyRequest{
		KeyId: tea.String(in.KeyId), NumberOfBytes: tea.Int32(32), Aad: aad,
	})
	if err != nil {
		out["generateDataKeyDecrypt"] = failure(err)
	} else {
		plain, err := good.Decrypt(&dedicatedkmssdk.DecryptRequest{
			KeyId: tea.String(in.KeyId), CiphertextBlob: dk.CiphertextBlob, Iv: dk.Iv,
			Algorithm: dk.Algorithm, Aad: aad,
		})
		if err != nil {
			out["generateDataKeyDecrypt"] = failure(err)
		} else {
			out["generateDataKeyDecrypt"] = result{"ok": true, "ivBytes": len(dk.Iv), "algorithm": tea.StringValue(dk.Algorithm),
				"plaintextBytes": len(dk.Plaintext), "matches": bytes.Equal(plain.Plaintext, dk.Plaintext)}
		}
	}

	e, err := good.Encrypt(&dedicatedkmssdk.EncryptRequest{KeyId: tea.String(in.KeyId), Plaintext: message, Aad: aad})
	if err != nil {
		out["encryptDecrypt"] = failure(err)
	} else {
		plain, err := good.Decrypt(&dedicatedkmssdk.DecryptRequest{
			KeyId: tea.String(in.KeyId), CiphertextBlob: e.CiphertextBlob, Iv: e.Iv, Algorithm: e.Algorithm, Aad: aad,
		})
		if err != nil {
			out["encryptDecrypt"] = failure(err)
		} else {
			out["encryptDecrypt"] = result{"ok": true, "ivBytes": len(e.Iv), "matches": bytes.Equal(plain.Plaintext, message)}
		}
	}

	random, err := good.GenerateRandom(&dedicatedkmssdk.GenerateRandomRequest{Length: tea.Int32(24)})
	if err != nil {
		out["generateRandom"] = failure(err)
	} else {
		out["generateRandom"] = result{"ok": true, "bytes": len(random.Random)}
	}

	for _, name := range []string{"foreign", "expired", "narrow", "network"} {
		_, err := client(in, name).AdvanceGenerateDataKey(&dedicatedkmssdk.AdvanceGenerateDataKeyRequest{
			KeyId: tea.String(in.KeyId), NumberOfBytes: tea.Int32(32),
		})
		out[name] = failureOrOk(err)
	}
	out["skewedDate"] = skewed(in)
}

func runAfter(in input, out map[string]result) {
	good := client(in, "good")
	dec, err := good.AdvanceDecrypt(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: in.OldBlob, Aad: in.OldAad})
	if err != nil {
		out["oldCiphertext"] = failure(err)
	} else {
		out["oldCiphertext"] = result{"ok": true, "matches": digest(dec.Plaintext) == in.OldDigest,
			"keyVersionId": tea.StringValue(dec.KeyVersionId)}
	}
	gen, err := good.AdvanceGenerateDataKey(&dedicatedkmssdk.AdvanceGenerateDataKeyRequest{
		KeyId: tea.String(in.KeyId), NumberOfBytes: tea.Int32(32), Aad: in.OldAad,
	})
	if err != nil {
		out["afterRotation"] = failure(err)
	} else {
		out["afterRotation"] = result{"ok": true, "keyVersionId": tea.StringValue(gen.KeyVersionId)}
	}
}

func failureOrOk(err error) result {
	if err == nil {
		return result{"ok": true}
	}
	return failure(err)
}

// skewed sends one request built and signed by the SDK's own parts (protobuf
// types, StringToSign, client-key signer, error decoder) with a Date an hour
// old: the SDK's client always stamps the current time.
func skewed(in input) result {
	ck := in.Clients["good"]
	cred, err := credential.NewClient(&credential.Config{
		Type: tea.String("rsa_key_pair"), ClientKeyContent: tea.String(ck.Content), Password: tea.String(ck.Password),
	})
	if err != nil {
		return result{"ok": false, "error": err.Error()}
	}
	body, _ := proto.Marshal(&api.GenerateRandomRequest{Length: 16})
	sum := sha256.Sum256(body)
	headers := map[string]*string{
		"accept":                tea.String("application/x-protobuf"),
		"date":                  tea.String(time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)),
		"x-kms-apiversion":      tea.String("dkms-gcs-0.2"),
		"x-kms-apiname":         tea.String("GenerateRandom"),
		"x-kms-signaturemethod": tea.String("RSA_PKCS1_SHA_256"),
		"x-kms-acccesskeyid":    cred.GetAccessKeyId(),
		"content-type":          tea.String("application/x-protobuf"),
		"content-sha256":        tea.String(strings.ToUpper(hex.EncodeToString(sum[:]))),
	}
	toSign, _ := dedicatedkmsopenapiutil.GetStringToSign(tea.String("POST"), tea.String("/"), headers, nil)
	headers["authorization"], err = cred.GetSignature(toSign)
	if err != nil {
		return result{"ok": false, "error": err.Error()}
	}
	req, _ := http.NewRequest("POST", "https://"+in.Endpoint+"/", bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, tea.StringValue(v))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(in.Ca))
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := httpClient.Do(req)
	if err != nil {
		return result{"ok": false, "error": err.Error()}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	parsed, err := dedicatedkmsopenapiutil.GetErrMessage(data)
	if err != nil {
		return result{"ok": false, "httpCode": resp.StatusCode, "error": err.Error()}
	}
	return result{"ok": resp.StatusCode == 200, "httpCode": resp.StatusCode, "code": parsed["Code"],
		"message": parsed["Message"]}
}

// openSecret decrypts a DataKey's Secret as docs/kms-api.md tells an
// application to: AdvanceDecrypt(ciphertextBlob, aad) in the Advance flow,
// Decrypt(keyId, ciphertextBlob, Aad = the encryptionContext text, AES_GCM)
// in the Standard flow.
func openSecret(in input) result {
	secret := in.Secret
	blob, _ := base64.StdEncoding.DecodeString(secret["ciphertextBlob"])
	good := client(in, "good")
	var plaintext []byte
	if secret["flow"] == "Advance" {
		aad, _ := base64.StdEncoding.DecodeString(secret["aad"])
		r, err := good.AdvanceDecrypt(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: blob, Aad: aad})
		if err != nil {
			return failure(err)
		}
		plaintext = r.Plaintext
	} else {
		r, err := good.Decrypt(&dedicatedkmssdk.DecryptRequest{
			KeyId: tea.String(secret["keyId"]), CiphertextBlob: blob, Algorithm: tea.String("AES_GCM"),
			Aad: []byte(secret["encryptionContext"]),
		})
		if err != nil {
			return failure(err)
		}
		plaintext = r.Plaintext
	}
	return result{"ok": true, "plaintextDigest": digest(plaintext)}
}
