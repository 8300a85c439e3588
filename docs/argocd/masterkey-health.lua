-- Argo CD health check for kms.datakey.io/MasterKey (resource.customizations.health).
-- Healthy: Ready=True for the current generation. Suspended: the key is
-- disabled on purpose (spec.enabled: false). Progressing: not yet reconciled,
-- or data keys are still being re-wrapped after a rotation. Degraded: Ready=False
-- (alias conflict, KMS error, deletion blocked by DataKeys).
local hs = { status = "Progressing", message = "Waiting for the operator to reconcile the MasterKey" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local ready, rotating
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Rotating" then
    rotating = c
  end
end
if ready == nil then
  return hs
end
if generation ~= nil and (ready.observedGeneration or 0) < generation then
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
if ready.status ~= "True" then
  hs.message = ready.message or hs.message
  return hs
end
if ready.reason == "KeyDisabled" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
if rotating ~= nil and rotating.status == "True" then
  hs.message = "Re-wrapping after rotation: " .. (rotating.message or "")
  return hs
end
hs.status = "Healthy"
hs.message = ready.message
return hs
