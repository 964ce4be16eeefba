// client.mjs - a generic MCP client built on the official TypeScript SDK, for the tests.
//
//   node client.mjs STEPS.json -- COMMAND [ARGS...]
//
// Connects to COMMAND with StdioClientTransport (the whole environment is passed on), runs the
// steps of STEPS.json (a JSON array; "-" reads it from stdin) one after another and prints one
// line: a JSON array with one entry per step, {"ok": true, "result": ...} or
// {"ok": false, "error": {"code", "message"}}, plus "elapsed_ms". A first entry describes the
// connection: {"server": serverInfo, "capabilities": ..., "instructions": ...}.
//
// Steps:
//   {"op": "list_tools"}
//   {"op": "call", "name": N, "arguments": {...}, "timeout_ms"?: T}
//   {"op": "cancel_call", "name": N, "arguments": {...}, "after_ms": T}
//        starts the call, aborts it after T ms (the SDK sends notifications/cancelled), and
//        reports how the call ended
//   {"op": "ping"}
//   {"op": "request", "method": M, "params"?: {...}}   any request, result passed through
//   {"op": "sleep", "ms": T}
//
// The SDK is found through $MCP_SDK_DIR (a node_modules directory; see tests/e2e/mcpsdk.py).
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const sdkDir = process.env.MCP_SDK_DIR;
if (!sdkDir) {
	console.error('client.mjs: set MCP_SDK_DIR to the node_modules holding @modelcontextprotocol/sdk');
	process.exit(2);
}
const sdk = (p) => import(pathToFileURL(path.join(sdkDir, '@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StdioClientTransport } = await sdk('client/stdio.js');
const { ResultSchema } = await sdk('types.js');

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
if (argv.length < 3 || sep !== 1) {
	console.error('usage: node client.mjs STEPS.json -- COMMAND [ARGS...]');
	process.exit(2);
}
const steps = JSON.parse(fs.readFileSync(argv[0] === '-' ? 0 : argv[0], 'utf8'));
const [command, ...args] = argv.slice(2);

const errorOf = (e) => ({ code: e?.code ?? null, message: String(e?.message ?? e) });

const transport = new StdioClientTransport({ command, args, env: process.env, stderr: 'inherit' });
const client = new Client({ name: 'capsem-e2e', version: '1.0.0' });
const out = [];
try {
	await client.connect(transport);
	out.push({
		ok: true,
		result: {
			server: client.getServerVersion(),
			capabilities: client.getServerCapabilities(),
			instructions: client.getInstructions(),
		},
	});
} catch (e) {
	console.log(JSON.stringify([{ ok: false, error: errorOf(e) }]));
	process.exit(1);
}

for (const step of steps) {
	const t0 = Date.now();
	let entry;
	try {
		switch (step.op) {
		case 'list_tools':
			entry = { ok: true, result: await client.listTools() };
			break;
		case 'call':
			entry = {
				ok: true,
				result: await client.callTool({ name: step.name, arguments: step.arguments }, undefined,
					{ timeout: step.timeout_ms ?? 300000 }),
			};
			break;
		case 'cancel_call': {
			const ac = new AbortController();
			const timer = setTimeout(() => ac.abort('cancelled by the test'), step.after_ms);
			try {
				const r = await client.callTool({ name: step.name, arguments: step.arguments }, undefined,
					{ signal: ac.signal, timeout: 300000 });
				entry = { ok: true, result: r, aborted: false };
			} catch (e) {
				entry = { ok: false, error: errorOf(e), aborted: ac.signal.aborted };
			} finally {
				clearTimeout(timer);
			}
			break;
		}
		case 'ping':
			entry = { ok: true, result: await client.ping() };
			break;
		case 'request':
			entry = {
				ok: true,
				result: await client.request({ method: step.method, params: step.params }, ResultSchema),
			};
			break;
		case 'sleep':
			await new Promise((r) => setTimeout(r, step.ms));
			entry = { ok: true, result: null };
			break;
		default:
			entry = { ok: false, error: { code: null, message: `unknown op ${step.op}` } };
		}
	} catch (e) {
		entry = { ok: false, error: errorOf(e) };
	}
	entry.elapsed_ms = Date.now() - t0;
	out.push(entry);
}
await client.close();
console.log(JSON.stringify(out));
