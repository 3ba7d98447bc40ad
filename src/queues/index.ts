export { PushQueue, PullQueue } from './queue.js';
export { ipcEndpoint, ipcPath, removeIpcFile } from './ipc.js';
