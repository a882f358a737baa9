// The test host's bridge: ext-apps' AppBridge and its postMessage transport, as one browser script.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

window.McpApps = { AppBridge, PostMessageTransport };
