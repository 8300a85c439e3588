/** Paths on the operator's injection port, shared by the server and the agent (which loads nothing else). */
export const WEBHOOK_PATH = '/mutate-pods';
export const DELIVER_PATH = '/v1/deliver';
export const REPORT_PATH = '/v1/report';
