export { CancelReason } from "./CancelReason.ts";
export type { ChannelProducer, TerminalInfo } from "./ChannelProducer.ts";
export { type ChannelOptions, createStreamChannel, StreamChannel } from "./StreamChannel.ts";
