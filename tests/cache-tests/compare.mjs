// Compares a cache-tests result file with the nginx and Varnish results the suite ships,
// per test group, on the same test ids.
//
//   node compare.mjs <suite dir> <patchgate results.json>
//
// A test passes when its result is `true` (the suite's own rule for every kind). The
// "required" columns count the suite's required tests (no `kind`, or `kind: "required"`);
// the groups marked * are the ones that apply to a JSON API (issue 17). Then every
// required failure of patchgate, with the suite's message.

import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile] = process.argv.slice(2)
if (!suiteDir || !resultsFile) {
  console.error('usage: node compare.mjs <suite dir> <patchgate results.json>')
  process.exit(2)
}
const load = file => JSON.parse(fs.readFileSync(file, 'utf8'))
const ours = load(resultsFile)
const others = {
  nginx: load(path.join(suiteDir, 'results', 'nginx.json')),
  varnish: load(path.join(suiteDir, 'results', 'varnish.json'))
}
const JSON_API = new Set([
  'conditional-inm', 'conditional-lm', 'update304', 'invalidation', 'auth', 'vary',
  'headers', 'status', 'method', 'cc-freshness', 'cc-parse', 'cc-response', 'cc-request',
  'age-parse'
])

const suites = (await import(pathToFileURL(path.join(suiteDir, 'tests', 'index.mjs')))).default
const passed = (results, id) => results[id] === true
const required = test => test.kind === undefined || test.kind === 'required'

const rows = []
const failures = []
const total = { api: [0, 0, 0, 0, 0, 0, 0, 0], all: [0, 0, 0, 0, 0, 0, 0, 0] }
for (const suite of suites) {
  // [required ids, patchgate, nginx, varnish, all ids, patchgate, nginx, varnish]
  const n = [0, 0, 0, 0, 0, 0, 0, 0]
  for (const test of suite.tests) {
    // Only ids all three were run on.
    if (!(test.id in ours) || !(test.id in others.nginx) || !(test.id in others.varnish)) continue
    const marks = [passed(ours, test.id), passed(others.nginx, test.id), passed(others.varnish, test.id)]
    n[4] += 1
    marks.forEach((ok, i) => { n[5 + i] += ok ? 1 : 0 })
    if (required(test)) {
      n[0] += 1
      marks.forEach((ok, i) => { n[1 + i] += ok ? 1 : 0 })
      if (!marks[0]) {
        const result = ours[test.id]
        let why = Array.isArray(result) ? result.join(': ') : String(result)
        // The suite's own display shows these as "dependency failed", not as failures.
        const unmet = (test.depends_on || []).filter(id => !passed(ours, id))
        if (unmet.length) why += ` (depends on ${unmet.join(', ')}, not passed)`
        failures.push(`${suite.id} ${test.id}: ${why}`)
      }
    }
  }
  if (n[4] === 0) continue
  const api = JSON_API.has(suite.id)
  rows.push([suite.id + (api ? ' *' : ''), ...n])
  for (let i = 0; i < 8; i++) {
    total.all[i] += n[i]
    if (api) total.api[i] += n[i]
  }
}

const line = cells => console.log('| ' + cells.join(' | ') + ' |')
line(['group', 'required', 'patchgate', 'nginx', 'Varnish', 'all kinds', 'patchgate', 'nginx', 'Varnish'])
line(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:'])
for (const row of rows) line(row)
line(['**JSON-API groups (*)**', ...total.api.map(n => `**${n}**`)])
line(['**all groups**', ...total.all.map(n => `**${n}**`)])
console.log()
console.log(`patchgate's required failures (${failures.length}):`)
for (const failure of failures) console.log(`- ${failure}`)
