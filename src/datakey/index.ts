// The DataKey contract, shared by the controllers and injection: its identity
// binding, its generations, its Secret and status layouts, and opening a stored
// copy in the core.
export * from './generations';
export * from './identity';
export * from './open';
export * from './secret-layout';
export * from './status-layout';
export * from './wrapped';
