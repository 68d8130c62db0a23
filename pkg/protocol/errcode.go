package protocol

import "strconv"

// ErrorCode is the ErrorCode field of a response. The framework uses 0..999;
// applications use 1000 and above.
type ErrorCode uint16

// Framework error codes (protocol.md section 4).
const (
	Success                ErrorCode = 0
	RequestTimeout         ErrorCode = 1
	ServerNotFound         ErrorCode = 2
	StageNotFound          ErrorCode = 3
	ActorNotFound          ErrorCode = 4
	AuthenticationFailed   ErrorCode = 5
	NotAuthenticated       ErrorCode = 6
	AlreadyAuthenticated   ErrorCode = 7
	StageAlreadyExists     ErrorCode = 8
	StageCreationFailed    ErrorCode = 9
	JoinStageFailed        ErrorCode = 10
	InvalidMessage         ErrorCode = 11
	HandlerNotFound        ErrorCode = 12
	InvalidStageType       ErrorCode = 13
	SystemError            ErrorCode = 14
	UncheckedContentsError ErrorCode = 15
	InvalidAccountID       ErrorCode = 16
	JoinStageRejected      ErrorCode = 17
	RateLimitExceeded      ErrorCode = 18
	ServerDraining         ErrorCode = 19
	InternalError          ErrorCode = 99
)

// FirstApplicationCode is the lowest error code reserved for applications.
const FirstApplicationCode ErrorCode = 1000

var errorCodeNames = map[ErrorCode]string{
	Success: "Success", RequestTimeout: "RequestTimeout", ServerNotFound: "ServerNotFound",
	StageNotFound: "StageNotFound", ActorNotFound: "ActorNotFound",
	AuthenticationFailed: "AuthenticationFailed", NotAuthenticated: "NotAuthenticated",
	AlreadyAuthenticated: "AlreadyAuthenticated", StageAlreadyExists: "StageAlreadyExists",
	StageCreationFailed: "StageCreationFailed", JoinStageFailed: "JoinStageFailed",
	InvalidMessage: "InvalidMessage", HandlerNotFound: "HandlerNotFound",
	InvalidStageType: "InvalidStageType", SystemError: "SystemError",
	UncheckedContentsError: "UncheckedContentsError", InvalidAccountID: "InvalidAccountId",
	JoinStageRejected: "JoinStageRejected", RateLimitExceeded: "RateLimitExceeded",
	ServerDraining: "ServerDraining", InternalError: "InternalError",
}

// String returns the code's name, "Application(N)" for application codes, or
// "ErrorCode(N)" for unassigned framework codes.
func (c ErrorCode) String() string {
	if n, ok := errorCodeNames[c]; ok {
		return n
	}
	if c >= FirstApplicationCode {
		return "Application(" + strconv.Itoa(int(c)) + ")"
	}
	return "ErrorCode(" + strconv.Itoa(int(c)) + ")"
}
