import { describeRequest } from '../../src/runtime/kube-client';

// The request metric's labels: the verb and resource the API server's request info would name.
test.each([
  ['GET', '/api/v1/namespaces/ns/secrets/s', 'get', 'secrets'],
  ['GET', '/api/v1/namespaces/ns/secrets', 'list', 'secrets'],
  ['GET', '/api/v1/secrets', 'list', 'secrets'],
  ['POST', '/api/v1/namespaces/ns/events', 'create', 'events'],
  ['PATCH', '/api/v1/namespaces/ns/events/e.1', 'patch', 'events'],
  ['PUT', '/apis/coordination.k8s.io/v1/namespaces/ns/leases/l', 'update', 'leases'],
  [
    'PATCH',
    '/apis/kms.datakey.io/v1alpha1/namespaces/ns/datakeys/d/status',
    'patch',
    'datakeys/status',
  ],
  ['GET', '/apis/kms.datakey.io/v1alpha1/masterkeys/m', 'get', 'masterkeys'],
  ['PUT', '/apis/kms.datakey.io/v1alpha1/masterkeys/m/status', 'update', 'masterkeys/status'],
  [
    'DELETE',
    '/apis/kms.datakey.io/v1alpha1/namespaces/ns/datakeys',
    'deletecollection',
    'datakeys',
  ],
  ['DELETE', '/api/v1/namespaces/ns/pods/p', 'delete', 'pods'],
  ['GET', '/api/v1/namespaces/ns', 'get', 'namespaces'],
  ['POST', '/api/v1/namespaces', 'create', 'namespaces'],
  ['PUT', '/api/v1/namespaces/ns/finalize', 'update', 'namespaces/finalize'],
  ['GET', '/version', 'get', 'nonresource'],
])('%s %s is %s %s', (method, path, verb, resource) => {
  expect(describeRequest(method, path)).toEqual({ verb, resource });
});
