package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// FileError is a shared config or credentials file the AWS SDK could not
// read without crashing. The SDK's ini parser panics on some malformed
// lines (aws-sdk-go-v2 config v1.33.18: a value that is a lone double quote,
// `role_session_name = "`, slices out of range; FuzzProfileSettings found
// it), which would kill ssmproxy with a stack trace. The panic text is the
// SDK's own, never the file's content.
type FileError struct{ Panic any }

func (e *FileError) Error() string {
	return fmt.Sprintf("the AWS config or credentials file could not be parsed (the AWS SDK failed on it: %v); check its syntax, e.g. an unterminated quote", e.Panic)
}

// guard runs f, turning a panic inside the SDK into a *FileError.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, &FileError{Panic: r}
		}
	}()
	return f()
}

// LoadDefaultConfig is config.LoadDefaultConfig with the SDK's parser
// panics turned into a *FileError.
func LoadDefaultConfig(ctx context.Context, opts ...func(*config.LoadOptions) error) (aws.Config, error) {
	return guard(func() (aws.Config, error) { return config.LoadDefaultConfig(ctx, opts...) })
}

// LoadSharedConfigProfile is config.LoadSharedConfigProfile with the SDK's
// parser panics turned into a *FileError.
func LoadSharedConfigProfile(ctx context.Context, profile string, opts ...func(*config.LoadSharedConfigOptions)) (config.SharedConfig, error) {
	return guard(func() (config.SharedConfig, error) { return config.LoadSharedConfigProfile(ctx, profile, opts...) })
}
