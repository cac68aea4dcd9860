// What the page shows: the chat on screen, its messages, the reply streaming in it and
// the messages sent but not yet stored. The modules that show and change it import it;
// the chat list (chat-list.js), the socket (connection.js) and the token (api.js) keep
// their own.

export const state = {
  limits: null, // from the socket's `ready`
  chat: null, // the chat on screen (a Chat), or null for a new, unsent chat
  loadSeq: 0,
  loading: false, // history being fetched: live events wait in `buffered`
  buffered: [],
  messages: new Map(), // message id -> {message, node, note?, editing?, draft?, sending?}
  olderCursor: null, // `before` of the messages older than those shown, or null
  live: null, // the reply streaming on screen: {taskId, chatId, messageId, seq, content, reasoning}
  pending: new Map(), // request_id -> {content, chatId, editOf?} of messages sent, not yet stored
  newChatRequest: null, // request_id of the message that creates the chat on screen
  focusAfterLoad: null, // {messageId, action}: the version arrow to focus once shown
  hit: null, // {messageId, switched}: the search hit to scroll to once its branch is shown
  wantedLeaf: null, // the active leaf a reload of the chat on screen is fetching the branch of
  requestCounter: 0,
};
