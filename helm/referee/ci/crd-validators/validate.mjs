// Validates ServiceMonitor and PodMonitor manifests (a JSON list on stdin) with the
// schemas published in @kubernetes-models/prometheus-operator (generated from
// prometheus-operator's API types, monitoring.coreos.com/v1). Prints one JSON line:
// a list of {kind, name, error} with error null for a valid manifest.
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PodMonitor, ServiceMonitor };
let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((doc) => {
  const Model = models[doc.kind];
  const name = doc.metadata?.name ?? null;
  if (!Model) return { kind: doc.kind, name, error: `no published schema for ${doc.kind}` };
  try {
    new Model(doc).validate();
    return { kind: doc.kind, name, error: null };
  } catch (err) {
    return { kind: doc.kind, name, error: String(err.message ?? err) };
  }
});
console.log(JSON.stringify(results));
