// Cluster tests wait for controllers and the API server: give them room.
jest.setTimeout(180_000);
