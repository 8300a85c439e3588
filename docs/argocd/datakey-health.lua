-- Argo CD health check for kms.datakey.io/DataKey (resource.customizations.health).
-- Healthy: Ready=True for the current generation (its Secret holds the
-- ciphertext). Progressing: not yet reconciled, or waiting for its MasterKey
-- to become Ready. Degraded: Ready=False for any other reason (MasterKey
-- missing or disabled, a foreign Secret in the way, a KMS error).
local hs = { status = "Progressing", message = "Waiting for the operator to reconcile the DataKey" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local ready
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
if generation ~= nil and (ready.observedGeneration or 0) < generation then
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready.status == "False" and ready.reason ~= "MasterKeyNotReady" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
hs.message = ready.message or hs.message
return hs
