#!/usr/bin/env bash
# Self-check of evaluate.mjs: known decisions come back, and bad input fails loudly.
# Usage: tests/iam/selfcheck.sh   (installs the locked packages first if needed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error

passed=0
failed=0
check() { # check WHAT COMMAND...: counts COMMAND's success
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $what" >&2
  fi
}

acct=123456789012
inst="arn:aws:ec2:us-east-1:$acct:instance/i-0123"
role="arn:aws:iam::$acct:role/x"

# ${...} below are IAM policy variables / template placeholders, not shell ones.
# shellcheck disable=SC2016
# Allow starting instances that carry a bastion:cluster tag; deny one instance outright.
identity='{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "ec2:StartInstances", "Resource": "*",
   "Condition": {"Null": {"aws:ResourceTag/bastion:cluster": "false"}}},
  {"Effect": "Deny", "Action": "ec2:StartInstances",
   "Resource": "arn:aws:ec2:*:*:instance/i-denied"},
  {"Effect": "Allow", "Action": "ec2-instance-connect:SendSSHPublicKey", "Resource": "*",
   "Condition": {"StringEquals": {"ec2:osuser": "bastion-jump"}}},
  {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
   "Condition": {"StringLike": {"aws:userid": "*:${ec2:InstanceID}"},
                 "ForAllValues:StringLike": {"aws:TagKeys": "bastion:*"}}}]}'
# A boundary that allows everything but StartInstances.
boundary='{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "NotAction": "ec2:StartInstances", "Resource": "*"}]}'

req() { # req NAME ACTION RESOURCE CONTEXT-JSON
  printf '{"name": "%s", "action": "%s", "resource": "%s", "principal": "%s", "context": %s}' \
    "$1" "$2" "$3" "$role" "$4"
}
requests="[
  $(req tagged ec2:StartInstances "$inst" '{"aws:ResourceTag/bastion:cluster": "c1"}'),
  $(req untagged ec2:StartInstances "$inst" '{}'),
  $(req tag-case ec2:StartInstances "$inst" '{"AWS:ResourceTag/Bastion:Cluster": "c1"}'),
  $(req denied ec2:StartInstances "${inst%/*}/i-denied" '{"aws:ResourceTag/bastion:cluster": "c1"}'),
  $(req osuser-ok ec2-instance-connect:SendSSHPublicKey "$inst" '{"ec2:osuser": "bastion-jump"}'),
  $(req osuser-root ec2-instance-connect:SendSSHPublicKey "$inst" '{"ec2:osuser": "root"}'),
  $(req tag-self ec2:CreateTags "$inst" \
    '{"aws:TagKeys": ["bastion:state"], "aws:userid": "AROAX:i-0123", "ec2:InstanceID": "i-0123"}'),
  $(req tag-other ec2:CreateTags "$inst" \
    '{"aws:TagKeys": ["bastion:state"], "aws:userid": "AROAX:i-9999", "ec2:InstanceID": "i-0123"}'),
  $(req tag-name ec2:CreateTags "$inst" \
    '{"aws:TagKeys": ["bastion:state", "Name"], "aws:userid": "AROAX:i-0123", "ec2:InstanceID": "i-0123"}')
]"

expect() { # expect OUTPUT NAME DECISION
  check "$2 should be $3" grep -Fxq "{\"name\":\"$2\",\"decision\":\"$3\"}" <<<"$1"
}

rc=0
out=$(node evaluate.mjs <<<"{\"policies\": {\"identity\": [$identity], \"boundary\": null}, \"requests\": $requests}") || rc=$?
check "evaluate.mjs exits 0 on valid input (rc=$rc)" test "$rc" = 0
expect "$out" tagged Allowed
expect "$out" untagged ImplicitlyDenied
expect "$out" tag-case Allowed
expect "$out" denied ExplicitlyDenied
expect "$out" osuser-ok Allowed
expect "$out" osuser-root ImplicitlyDenied
expect "$out" tag-self Allowed
expect "$out" tag-other ImplicitlyDenied
expect "$out" tag-name ImplicitlyDenied

# The boundary lacks StartInstances, so the identity's Allow is not enough; it
# does allow SendSSHPublicKey, which stays allowed.
rc=0
out=$(node evaluate.mjs <<<"{\"policies\": {\"identity\": [$identity], \"boundary\": $boundary}, \"requests\": $requests}") || rc=$?
check "evaluate.mjs exits 0 with a boundary (rc=$rc)" test "$rc" = 0
expect "$out" tagged ImplicitlyDenied
expect "$out" osuser-ok Allowed

failed_saying() { [[ $1 != 0 && $2 == *"$3"* ]]; } # failed_saying RC STDERR PATTERN
# Bad input must fail: non-zero exit and a reason on stderr, never a quiet answer.
fails() { # fails WHAT INPUT-JSON PATTERN-EXPECTED-ON-STDERR
  local err rc=0
  err=$(node evaluate.mjs 2>&1 >/dev/null <<<"$2") || rc=$?
  check "$1 (rc=$rc, stderr: $err)" failed_saying "$rc" "$err" "$3"
}
one="[$(req r ec2:StartInstances "$inst" '{}')]"
fails "invalid Effect" \
  '{"policies": {"identity": [{"Version": "2012-10-17", "Statement": {"Effect": "allow", "Action": "*", "Resource": "*"}}]}, "requests": '"$one"'}' \
  'Effect must be'
fails "unknown operator" \
  '{"policies": {"identity": [{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEqualz": {"aws:userid": "x"}}}}]}, "requests": '"$one"'}' \
  'unknown condition operator'
# shellcheck disable=SC2016
fails "unrendered placeholder" \
  '{"policies": {"identity": [{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:${PARTITION}:ec2:*:*:instance/*"}}]}, "requests": '"$one"'}' \
  'PARTITION'
fails "multi-valued key as a string" \
  "{\"policies\": {\"identity\": [$identity]}, \"requests\": [$(req r ec2:CreateTags "$inst" '{"aws:TagKeys": "bastion:state"}')]}" \
  'must be an array'
fails "key that does not apply to the action" \
  "{\"policies\": {\"identity\": [$identity]}, \"requests\": [$(req r ec2:StartInstances "$inst" '{"ec2:osuser": "root"}')]}" \
  'not available'

# OpenTunnel, whose iam-data entry evaluate.mjs corrects (DATA_FIXES): its condition keys
# count, and a key it does not have fails.
eice="arn:aws:ec2:us-east-1:$acct:instance-connect-endpoint/eice-0123"
tunnel='{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "ec2-instance-connect:OpenTunnel", "Resource": "'"$eice"'",
   "Condition": {"NumericEquals": {"ec2-instance-connect:remotePort": "22"},
                 "IpAddress": {"ec2-instance-connect:privateIpAddress": "10.0.0.10/32"}}}]}'
tunnels="[
  $(req t22 ec2-instance-connect:OpenTunnel "$eice" '{"ec2-instance-connect:remotePort": "22", "ec2-instance-connect:privateIpAddress": "10.0.0.10"}'),
  $(req t80 ec2-instance-connect:OpenTunnel "$eice" '{"ec2-instance-connect:remotePort": "80", "ec2-instance-connect:privateIpAddress": "10.0.0.10"}'),
  $(req tip ec2-instance-connect:OpenTunnel "$eice" '{"ec2-instance-connect:remotePort": "22", "ec2-instance-connect:privateIpAddress": "10.0.0.11"}')
]"
rc=0
out=$(node evaluate.mjs <<<"{\"policies\": {\"identity\": [$tunnel], \"boundary\": null}, \"requests\": $tunnels}") || rc=$?
check "evaluate.mjs exits 0 on OpenTunnel requests (rc=$rc)" test "$rc" = 0
expect "$out" t22 Allowed
expect "$out" t80 ImplicitlyDenied
expect "$out" tip ImplicitlyDenied
fails "a key OpenTunnel does not have" \
  "{\"policies\": {\"identity\": [$tunnel]}, \"requests\": [$(req r ec2-instance-connect:OpenTunnel "$eice" '{"ec2:osuser": "root"}')]}" \
  'not available'

echo "selfcheck: $passed passed, $failed failed"
[[ $failed == 0 ]]
