// Command awscli is a stand-in for `aws ssm start-session`, just enough of
// it to run the official session-manager-plugin against bin/fakeaws
// (docs/fakeaws.md section 10): it calls StartSession with the AWS SDK, then
// hands the session to the plugin exactly as the AWS CLI does (awscli's
// customizations/sessionmanager.py): the StartSession response in the
// environment variable AWS_SSM_START_SESSION_RESPONSE (the CLI does this for
// plugins from 1.2.497.0 on, which keeps the token out of argv), then the
// region, the operation name, the profile ("" when none), the request
// parameters as JSON and the SSM endpoint URL as arguments.
//
//	awscli -plugin PATH [-document NAME] [-param KEY=VALUE ...] TARGET [PORT]
//
// PORT, when given, is the portNumber parameter, so the command works as an
// ssh ProxyCommand (`... %h %p`). The SDK reads the fake's environment
// (AWS_ENDPOINT_URL_SSM, AWS_REGION, keys). The plugin replaces this process,
// so ssh talks to it directly, as with the CLI.
//
// This is a test tool (internal/archtest lists e2e/... as tools), not
// ssmproxy code.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

type params map[string][]string

func (p params) String() string { return fmt.Sprint(map[string][]string(p)) }

func (p params) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	p[k] = append(p[k], val)
	return nil
}

func main() {
	plugin := flag.String("plugin", "session-manager-plugin", "the session-manager-plugin binary")
	document := flag.String("document", "AWS-StartSSHSession", "DocumentName")
	ps := params{}
	flag.Var(ps, "param", "a document parameter `KEY=VALUE` (repeatable)")
	flag.Parse()
	if flag.NArg() < 1 || flag.NArg() > 2 {
		fmt.Fprintln(os.Stderr, "usage: awscli -plugin PATH [-document NAME] [-param KEY=VALUE ...] TARGET [PORT]")
		os.Exit(2)
	}
	if flag.NArg() == 2 {
		ps["portNumber"] = []string{flag.Arg(1)}
	}
	if err := run(*plugin, flag.Arg(0), *document, ps); err != nil {
		fmt.Fprintln(os.Stderr, "awscli:", err)
		os.Exit(1)
	}
}

func run(plugin, target, document string, ps params) error {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	endpoint := os.Getenv("AWS_ENDPOINT_URL_SSM")
	if endpoint == "" {
		return fmt.Errorf("AWS_ENDPOINT_URL_SSM is not set: this tool only talks to the fake")
	}
	in := &ssm.StartSessionInput{Target: aws.String(target), DocumentName: aws.String(document)}
	if len(ps) > 0 {
		in.Parameters = ps
	}
	out, err := ssm.NewFromConfig(cfg).StartSession(ctx, in)
	if err != nil {
		return fmt.Errorf("StartSession: %w", err)
	}
	// The CLI's json.dumps of the response's three fields and of the
	// request parameters.
	resp, err := json.Marshal(map[string]string{"SessionId": aws.ToString(out.SessionId),
		"TokenValue": aws.ToString(out.TokenValue), "StreamUrl": aws.ToString(out.StreamUrl)})
	if err != nil {
		return err
	}
	req := map[string]any{"Target": target, "DocumentName": document}
	if len(ps) > 0 {
		req["Parameters"] = ps
	}
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return err
	}
	const envName = "AWS_SSM_START_SESSION_RESPONSE"
	env := append(os.Environ(), envName+"="+string(resp))
	argv := []string{plugin, envName, cfg.Region, "StartSession", "", string(reqJSON), endpoint}
	return syscall.Exec(plugin, argv, env)
}
