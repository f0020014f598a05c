package testkit

import (
	"path/filepath"
	"testing"
)

// awsCredentialVars are the environment variables through which the AWS
// SDK could find the developer's own credentials or endpoints.
var awsCredentialVars = []string{
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
	"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CREDENTIAL_EXPIRATION",
	"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "SSH_ASKPASS",
}

// CleanAWSEnv gives t an AWS environment of its own: none of the
// developer's credentials, profiles or endpoints (nor the extra variables
// named), empty config and credentials files, region us-east-1, no instance
// metadata, and STS at stsURL.
func CleanAWSEnv(t testing.TB, stsURL string, extra ...string) {
	t.Helper()
	for _, k := range append(append([]string(nil), awsCredentialVars...), extra...) {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "credentials"))
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL_STS", stsURL)
}
