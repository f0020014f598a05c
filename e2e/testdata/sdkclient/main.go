// Command sdkclient is a plain AWS SDK program, as any tool using a shared
// config profile would be: the e2e test points its profile's
// credential_process at "ssmproxy credential-process" and checks what the
// credentials may do against the fake. It prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

type result struct {
	CallerARN     string    `json:"caller_arn"`
	AccessKeyID   string    `json:"access_key_id"`
	Expires       time.Time `json:"expires"`
	StartSession  string    `json:"start_session"`  // "ok" or the error
	Terminate     string    `json:"terminate"`      // "ok" or the error
	OtherInstance string    `json:"other_instance"` // "ok" or the error
}

func main() {
	ctx := context.Background()
	target, other := os.Args[1], os.Args[2]
	cfg, err := config.LoadDefaultConfig(ctx) // profile, region and endpoints from the environment
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var r result
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "credentials:", err)
		os.Exit(1)
	}
	r.AccessKeyID, r.Expires = creds.AccessKeyID, creds.Expires
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "GetCallerIdentity:", err)
		os.Exit(1)
	}
	r.CallerARN = aws.ToString(id.Arn)
	c := ssm.NewFromConfig(cfg)
	out, err := c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(target), DocumentName: aws.String("AWS-StartSSHSession"),
		Parameters: map[string][]string{"portNumber": {"22"}}})
	r.StartSession = outcome(err)
	if err == nil {
		_, err = c.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: out.SessionId})
		r.Terminate = outcome(err)
	}
	_, err = c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(other), DocumentName: aws.String("AWS-StartSSHSession")})
	r.OtherInstance = outcome(err)
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
