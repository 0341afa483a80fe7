export { CancelReason } from "./CancelReason.ts";
export type { ChannelOptions, ChannelProducer, TerminalInfo } from "./ChannelCore.ts";
export { createStreamChannel, StreamChannel } from "./StreamChannel.ts";
